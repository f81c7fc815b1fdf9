"""Who may call what, and how often: credentials, scopes and rate limits, once for both apps.

Each app calls :meth:`Access.check` with the request's method, its route as the OpenAPI
document writes it (``/retrain/{job_id}``), its credential headers and the client's address,
before the body is read; the check raises the core's 401/403/429/503 errors, or returns the
rate-limit headers to add to the answer. :func:`document_security` writes the same rules
into both OpenAPI documents, so what is enforced and what is documented cannot drift apart.

A credential is an API key (``xgbops keys create``), a JWT signed by the configured identity
provider's keys, or the retrain token (an ``admin`` credential, kept for existing callers).
Every wrong credential (malformed, unknown, revoked, wrong secret, bad signature) gets the same
401: nothing tells a caller whether a key id exists.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from xgbops.config import ConfigError, Settings
from xgbops.keys import SCOPES, ApiKey, KeyStore, Scope, parse_key, parse_scopes, secret_hash

from api.core.errors import ApiError, Forbidden, TooManyRequests, Unauthorized

log = structlog.get_logger(__name__)

#: The scope each protected operation needs; every other operation is open (health, readiness,
#: Prometheus metrics, the OpenAPI document and its page).
OPERATION_SCOPES: Final[Mapping[tuple[str, str], Scope]] = {
    ("POST", "/predict"): "predict",
    ("POST", "/predict/batch"): "predict",
    ("POST", "/api/v1/predict"): "predict",
    ("POST", "/feedback"): "predict",
    ("GET", "/ws/predict"): "predict",
    ("GET", "/model"): "read",
    ("GET", "/predictions"): "read",
    ("GET", "/api/v1/metrics"): "read",
    ("POST", "/retrain"): "admin",
    ("GET", "/retrain/{job_id}"): "admin",
    ("GET", "/rollout"): "read",
    ("PUT", "/rollout"): "admin",
}
#: The OpenAPI security schemes both documents declare.
SECURITY_SCHEMES: Final[dict[str, dict[str, str]]] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API key or a JWT"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
MISSING: Final = "a credential is required: send Authorization: Bearer <key> or X-API-Key: <key>"
INVALID: Final = "invalid credentials"
#: Most key ids a worker remembers (an attacker's random ids must not grow it without end).
_CACHE_SIZE: Final = 10_000


class CredentialsUnavailable(ApiError):
    """A credential cannot be checked now: the key store does not answer (503)."""

    def __init__(self) -> None:
        super().__init__(
            "credentials cannot be checked now; retry later", (), 503, "auth_unavailable"
        )


@dataclass(frozen=True)
class Principal:
    """Who calls: the subject rate limits count against, and what it may do."""

    subject: str
    scopes: frozenset[Scope]


class Access:
    """Authentication, authorisation and rate limiting of one worker process."""

    def __init__(
        self,
        settings: Settings,
        engine: Callable[[], Engine],
        limiter: RateLimits | None = None,
        jwt_verifier: JwtVerifier | None = None,
    ) -> None:
        """``engine``: the worker's history pool, asked for only when a key is checked."""
        self.settings = settings
        self.auth = settings.auth
        self._engine = engine
        self._keys: dict[str, tuple[float, ApiKey | None, str]] = {}
        self._lock = threading.Lock()
        self.limits = limiter or RateLimits.from_settings(settings)
        if jwt_verifier is None and settings.auth.jwks_url:
            jwt_verifier = JwtVerifier(settings)
        self.jwt = jwt_verifier
        token = settings.retrain_token.get_secret_value() if settings.retrain_token else ""
        self._admin_token_sha256 = secret_hash(token) if token else None

    @property
    def may_block(self) -> bool:
        """Whether :meth:`check` may wait on the network: a key looked up in the database, a
        JWKS fetched, or rate-limit counters in Redis. An event loop then calls it in a thread;
        otherwise it is a few dictionary lookups, cheaper inline than a thread hop."""
        shared_counters = self.limits.limiter is not None and not str(
            self.settings.limits.storage_uri
        ).startswith("memory://")
        return self.auth.enabled or shared_counters

    def check(
        self,
        method: str,
        route: str,
        authorization: str | None,
        api_key: str | None,
        client: str,
    ) -> dict[str, str]:
        """Let the request through or raise; returns the rate-limit headers of the answer.

        Raises:
            Unauthorized: no credential where one is needed, or a wrong one (401).
            Forbidden: a valid credential without the scope the operation needs (403).
            TooManyRequests: over the caller's rate limit (429).
            CredentialsUnavailable: the key store does not answer (503).
        """
        scope = OPERATION_SCOPES.get((method, route))
        if scope is None:
            return {}
        if not (self.auth.enabled or scope == "admin"):
            return self.limits.hit(scope, f"addr:{client}")
        credential = presented_credential(authorization, api_key)
        if credential is None:
            raise Unauthorized(MISSING)
        principal = self.authenticate(credential)
        if principal is None:
            raise Unauthorized(INVALID, error="invalid_token")
        if scope not in principal.scopes:
            raise Forbidden(f"this credential lacks the {scope} scope")
        return self.limits.hit(scope, principal.subject)

    def authenticate(self, credential: str) -> Principal | None:
        """The principal ``credential`` stands for, or None if it stands for nobody."""
        if self._admin_token_sha256 is not None and hmac.compare_digest(
            secret_hash(credential), self._admin_token_sha256
        ):
            return Principal("token:retrain", frozenset(SCOPES))
        if parse_key(credential) is not None:
            key = self._key(credential)
            return Principal(f"key:{key.id}", key.scopes) if key else None
        if self.jwt is not None and credential.count(".") == 2:
            return self.jwt.verify(credential)
        return None

    def _key(self, credential: str) -> ApiKey | None:
        """The active key, from this worker's cache while fresh, else from the database."""
        key_id, secret = parse_key(credential) or ("", "")
        now = time.monotonic()
        cached = self._keys.get(key_id)
        if cached is None or cached[0] <= now:
            try:
                found = KeyStore(self._engine()).lookup(key_id)
            except SQLAlchemyError as exc:
                if cached is None:  # never seen: nothing to fall back on
                    log.warning("auth.key_store_unavailable", error=type(exc).__name__)
                    raise CredentialsUnavailable() from None
            else:  # the store is down: trust what it said last (cached stays as it was)
                key, stored = found if found else (None, "")
                cached = (now + self.auth.key_cache_seconds, key, stored)
                with self._lock:
                    if len(self._keys) >= _CACHE_SIZE:
                        self._keys.clear()
                    self._keys[key_id] = cached
        _, key, stored = cached
        if key is None or not hmac.compare_digest(secret_hash(secret), stored):
            return None
        return key


def presented_credential(authorization: str | None, api_key: str | None) -> str | None:
    """The credential of ``X-API-Key``, else of ``Authorization: Bearer``."""
    if api_key:
        return api_key.strip() or None
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class RateLimits:
    """Per-subject counters with the ``limits`` library (Redis shared, or in this process).

    When the counters' store fails, requests go through (logged once a minute): a rate
    limiter that is down must not take the predictions down with it.
    """

    def __init__(self, items: Mapping[str, Any], limiter: Any | None) -> None:
        self.items = dict(items)
        self.limiter = limiter
        self._policies = {
            scope: f"{item.amount};w={item.get_expiry()}" for scope, item in self.items.items()
        }
        self._last_warning = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        """The limits of ``settings.limits``; none set: a no-op that never connects.

        Raises:
            ConfigError: a limit is not in the ``limits`` notation, or the storage is unknown.
        """
        wanted = {
            scope: text
            for scope, text in (
                ("predict", settings.limits.predict),
                ("read", settings.limits.read),
            )
            if text
        }
        if not wanted:
            return cls({}, None)
        # pylint: disable-next=import-outside-toplevel  # only when a limit is set
        from limits import parse, storage, strategies

        items = {}
        for scope, text in wanted.items():
            try:
                items[scope] = parse(text)
            except ValueError:
                raise ConfigError(
                    f"limits.{scope}: {text!r} is not a rate (e.g. 100/second, 6000/minute)"
                ) from None
        try:
            store = storage.storage_from_string(settings.limits.storage_uri)
        except Exception as exc:  # the library raises ConfigurationError or ValueError
            raise ConfigError(f"limits.storage_uri: {exc}") from None
        strategy = strategies.STRATEGIES[settings.limits.strategy]
        return cls(items, strategy(store))

    def hit(self, scope: str, subject: str) -> dict[str, str]:
        """Count one request of ``subject``; returns the RateLimit headers.

        Raises:
            TooManyRequests: the subject used up its limit (``Retry-After`` says how long).
        """
        item = self.items.get(scope)
        if item is None or self.limiter is None:
            return {}
        try:
            allowed = self.limiter.hit(item, scope, subject)
            reset_at, remaining = self.limiter.get_window_stats(item, scope, subject)
        except Exception as exc:  # pylint: disable=broad-exception-caught  # fail open, see class
            now = time.monotonic()
            if now - self._last_warning > 60:
                self._last_warning = now
                log.warning("limits.storage_unavailable", error=type(exc).__name__)
            return {}
        reset = max(0, math.ceil(reset_at - time.time()))
        headers = {
            "RateLimit-Limit": str(item.amount),
            "RateLimit-Remaining": str(max(0, remaining)),
            "RateLimit-Reset": str(reset),
            "RateLimit-Policy": self._policies[scope],
        }
        if not allowed:
            raise TooManyRequests(retry_after=max(1, reset), headers=headers)
        return headers


class JwtVerifier:
    """JWTs from an identity provider, checked against its JWKS (keys cached by PyJWT)."""

    def __init__(self, settings: Settings) -> None:
        # pylint: disable-next=import-outside-toplevel  # only with a JWKS URL set
        import jwt

        self._jwt = jwt
        self.auth = settings.auth
        self.client = jwt.PyJWKClient(str(settings.auth.jwks_url), cache_keys=True, timeout=5)

    def verify(self, token: str) -> Principal | None:
        """The token's subject and scopes, or None if it is not valid here."""
        try:
            signing_key = self.client.get_signing_key_from_jwt(token)
            claims = self._jwt.decode(
                token,
                signing_key.key,
                algorithms=self.auth.jwt_algorithms,
                audience=self.auth.jwt_audience,
                issuer=self.auth.jwt_issuer,
                options={"require": ["exp", "sub"], "verify_aud": bool(self.auth.jwt_audience)},
            )
        except self._jwt.PyJWKClientConnectionError as exc:
            log.warning("auth.jwks_unavailable", error=str(exc)[:200])
            raise CredentialsUnavailable() from None
        except self._jwt.PyJWTError:
            return None
        raw = claims.get("scope", claims.get("scp", ""))
        names = raw.split() if isinstance(raw, str) else [str(name) for name in raw]
        try:
            scopes = parse_scopes(name for name in names if name in SCOPES)
        except ValueError:  # pragma: no cover - filtered to known names just above
            return None
        return Principal(
            f"jwt:{hashlib.sha256(str(claims['sub']).encode()).hexdigest()[:16]}", scopes
        )


def document_security(paths: dict[str, Any], settings: Settings) -> None:
    """Write into ``paths`` (an OpenAPI document's, from either app) what this server enforces:
    the security of each operation that needs a credential, its 401/403 answers, and 429 where
    a rate limit applies. Open operations stay undocumented as protected, as they are."""
    limited = {
        scope
        for scope, text in (("predict", settings.limits.predict), ("read", settings.limits.read))
        if text
    }
    refusals = {
        "401": "no credential, or a wrong one",
        "403": "the credential lacks the scope",
        "429": "rate limited: Retry-After says when to retry",
    }
    for (method, route), scope in OPERATION_SCOPES.items():
        operation = paths.get(route, {}).get(method.lower())
        if operation is None:
            continue
        needed = [status for status in ("401", "403") if settings.auth.enabled or scope == "admin"]
        if needed:
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            note = f"Needs a credential with the `{scope}` scope."
            operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
        if scope in limited:
            needed.append("429")
        responses = operation.setdefault("responses", {})
        for status in needed:
            responses[status] = {
                "description": refusals[status],
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                },
            }
