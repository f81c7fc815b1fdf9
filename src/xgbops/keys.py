"""API keys: made, listed and revoked by ``xgbops keys``, checked by the API.

A key reads ``xgb_<id>_<secret>``: the id (public) finds the row, the secret (32 random bytes)
is compared with its stored SHA-256 in constant time. The secret is shown once, at creation,
and stored nowhere else. A revoked key stays in the table, so ``list`` shows who had access.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, get_args

from sqlalchemy import Engine, RowMapping, insert, select, update

from xgbops.tables import api_keys

Scope = Literal["predict", "read", "admin"]
#: What each scope allows: ``predict`` scores and sends labels, ``read`` reads the model,
#: the history and the JSON metrics, ``admin`` retrains and steers rollouts (and implies both).
SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)
PREFIX: Final = "xgb"
_KEY: Final = re.compile(r"^xgb_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class UnknownKey(LookupError):
    """No key has this id."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None


def secret_hash(secret: str) -> str:
    """The stored form of a key's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(presented: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None (never a database lookup)."""
    match = _KEY.match(presented)
    return (match.group(1), match.group(2)) if match else None


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """Scopes from their names; ``admin`` implies ``predict`` and ``read``.

    Raises:
        ValueError: an unknown scope (the message lists the known ones).
    """
    found: set[Scope] = set()
    for name in names:
        if name not in SCOPES:
            raise ValueError(f"unknown scope {name!r}: choose from {', '.join(SCOPES)}")
        found.add(name)
    if "admin" in found:
        found.update(SCOPES)
    return frozenset(found)


class KeyStore:
    """The ``api_keys`` table of the serving database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
        """Store a new key; returns it and the full key text, which is not kept anywhere.

        Raises:
            ValueError: an unknown scope, no scope, or an empty name.
        """
        granted = parse_scopes(scopes)
        if not granted:
            raise ValueError("a key needs at least one scope")
        if not name.strip():
            raise ValueError("a key needs a name (who or what uses it)")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            connection.execute(
                insert(api_keys).values(
                    id=key_id,
                    name=name.strip(),
                    secret_sha256=secret_hash(secret),
                    scopes=" ".join(sorted(granted)),
                    created_at=now,
                    revoked_at=None,
                )
            )
        key = ApiKey(key_id, name.strip(), granted, now, None)
        return key, f"{PREFIX}_{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        """Every key, newest first, revoked ones included."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(api_keys).order_by(api_keys.c.created_at.desc())
            ).mappings()
            return [_key(row) for row in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent); the API refuses it within its cache lifetime.

        Raises:
            UnknownKey: no key has this id.
        """
        with self.engine.begin() as connection:
            connection.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            row = connection.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings()
            found = row.first()
        if found is None:
            raise UnknownKey(key_id)
        return _key(found)

    def lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The active key with this id and its secret's stored SHA-256, or None."""
        with self.engine.connect() as connection:
            row = (
                connection.execute(select(api_keys).where(api_keys.c.id == key_id))
                .mappings()
                .first()
            )
        if row is None or row["revoked_at"] is not None:
            return None
        return _key(row), row["secret_sha256"]

    def verify(self, presented: str) -> ApiKey | None:
        """The active key ``presented`` is, or None (malformed, unknown, revoked or wrong)."""
        parsed = parse_key(presented)
        found = self.lookup(parsed[0]) if parsed else None
        if parsed is None or found is None:
            return None
        key, stored = found
        return key if hmac.compare_digest(secret_hash(parsed[1]), stored) else None


def _key(row: RowMapping) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scopes=parse_scopes(row["scopes"].split()),
        created_at=_utc(row["created_at"]),
        revoked_at=_utc(row["revoked_at"]) if row["revoked_at"] else None,
    )


def _utc(moment: datetime) -> datetime:
    """SQLite hands back the stored UTC time without its offset."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
