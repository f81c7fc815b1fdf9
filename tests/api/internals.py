"""What no response may carry: driver or SQL text, a traceback, a file path, a class name or a
setting's name. Checked on every error response the API tests receive (tests/api/conftest.py
hooks every client) and on every response of the fuzz run."""

from __future__ import annotations

import re

#: Each pattern, and what it catches.
LEAKS = {
    "traceback": re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+"),
    "driver": re.compile(r"\b(psycopg2?|sqlalchemy|sqlite3|libpq|asyncpg|pg8000)\b", re.I),
    "sql": re.compile(
        r"\b(SELECT\s+\S.*\s+FROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b"
        r"|\[SQL:|\(Background on this error"
    ),
    "class name": re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception|Warning)\b"),
    "file path": re.compile(r"(?<![\w.-])/(home|root|tmp|var|usr|opt|app|work|srv|etc)/"),
    "setting": re.compile(r"\b(XGBOPS_[A-Z_]+|DATABASE_URL|MLFLOW_[A-Z_]+)\b"),
}


def leaks(body: str, request_text: str = "") -> list[str]:
    """The leaks in ``body``: (kind, text) descriptions. Text the request itself carried (a
    fuzzer's field name, say) is echoed back legitimately and is not a leak."""
    found = []
    for kind, pattern in LEAKS.items():
        for match in pattern.finditer(body):
            if match.group(0) not in request_text:
                found.append(f"{kind}: {match.group(0)!r}")
    return found
