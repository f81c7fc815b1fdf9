"""The serving layer: one service core (``api.core``), two thin adapters (Flask and FastAPI).

Installed with the ``serve`` extra, which holds nothing the servers do not import; training and
monitoring run in their own processes (``xgbops train``, the platform image), never here.
"""
