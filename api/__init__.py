"""The serving apps (Flask and its FastAPI twin) around one service core; see ``api.core``."""
