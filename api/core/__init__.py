"""The service core both API adapters share: plain data in, domain results out, no HTTP."""
