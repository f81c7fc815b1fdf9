"""The FastAPI twin (``app.create_app``); served by ``python -m api.fastapi_app``.

This package file imports nothing, so the uvicorn launcher starts without loading the app.
"""
