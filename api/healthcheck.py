"""``python -m api.healthcheck``: the serving image's HEALTHCHECK, whichever app it runs.

A container runs either the Flask app (``serve.port``) or the FastAPI twin
(``serve.fastapi_port``): the probe asks /ready on the Flask port and, when nothing listens
there, on the FastAPI one. Healthy means the server that runs answers 200: a champion is loaded
and the history database answers.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from xgbops.config import load_settings


def probe(port: int, timeout: float = 4.0) -> bool | None:
    """True when /ready answers 200, False on another answer, None when nothing listens."""
    url = f"http://127.0.0.1:{port}/ready"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # nosec B310 - loopback
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False
    except (urllib.error.URLError, OSError):
        return None


def main() -> int:
    """Exit 0 when the container's server is ready, 1 otherwise (Docker's convention)."""
    serve = load_settings().serve
    for port in (serve.port, serve.fastapi_port):
        answer = probe(port)
        if answer is not None:
            print(f"port {port}: {'ready' if answer else 'not ready'}")
            return 0 if answer else 1
    print("no server answers on the Flask or the FastAPI port")
    return 1


if __name__ == "__main__":
    sys.exit(main())
