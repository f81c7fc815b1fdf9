"""xgbops: an MLOps platform for tabular XGBoost models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xgbops")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"


class XgbopsError(Exception):
    """Base of the errors a user can fix; the CLI prints their message instead of a traceback."""
