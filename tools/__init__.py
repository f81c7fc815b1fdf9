"""Development tools the tests and make targets use; not part of the xgbops package."""
