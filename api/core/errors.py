"""Domain errors and the one JSON error shape both apps return.

Every error body is ``{"error": <code>, "message": <sentence>, "detail": [{"field", "reason"}]}``,
built by :func:`error_body` only, so Flask and FastAPI answer a bad request byte for byte alike;
a 5xx adds the ``request_id`` under which the log holds the rest. A message is written for the
client: it never carries a driver's text, SQL, a traceback, a file path, a class name or a
setting's name (the tests check every error body they receive for those).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One offending field: its dotted path (``records.3.state``) and why it was refused."""

    field: str
    reason: str


@dataclass
class ApiError(Exception):
    """Base of the errors the adapters map to an HTTP status."""

    message: str
    detail: Sequence[FieldError] = field(default_factory=tuple)
    status: int = 400
    code: str = "bad_request"
    headers: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


class ValidationFailed(ApiError):
    """The request body was read but some fields are invalid (422)."""

    def __init__(self, detail: Sequence[FieldError], message: str = "invalid input") -> None:
        super().__init__(message, tuple(sorted(detail, key=_order)), 422, "validation_error")


class BadRequest(ApiError):
    """The body is not JSON, not an object, or otherwise unreadable (400)."""

    def __init__(self, message: str, field_name: str = "body") -> None:
        super().__init__(message, (FieldError(field_name, message),), 400, "bad_request")


class PayloadTooLarge(ApiError):
    """The body or the batch exceeds the configured limit (413)."""

    def __init__(self, message: str, field_name: str = "body") -> None:
        super().__init__(message, (FieldError(field_name, message),), 413, "payload_too_large")


class HeaderTooLarge(ApiError):
    """A request header line is longer than the configured limit (431)."""

    def __init__(self, name: str, limit: int) -> None:
        message = f"request header {name} is longer than {limit} bytes"
        super().__init__(
            message, (FieldError(name, message),), 431, "request_header_fields_too_large"
        )


class UnsupportedMediaType(ApiError):
    """The body is not ``application/json`` (415)."""

    def __init__(self, content_type: str | None) -> None:
        message = f"content type must be application/json (got {content_type or 'none'})"
        super().__init__(
            message, (FieldError("content-type", message),), 415, "unsupported_media_type"
        )


class ModelNotReady(ApiError):
    """No champion is loaded yet (503)."""

    def __init__(self, reason: str = "no model is loaded yet") -> None:
        super().__init__(f"{reason}; retry later", (), 503, "model_not_ready")


class HistoryUnavailable(ApiError):
    """The prediction-history database cannot be read, or a label written (503); predictions
    are still served. The cause goes to the log, not to the client."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} now; retry later", (), 503, "history_unavailable")


class RegistryUnavailable(ApiError):
    """The model registry, which holds the rollout's state behind an MLflow server, does not
    answer (503); predictions are still served."""

    def __init__(self) -> None:
        super().__init__(
            "the model registry does not answer now; retry later", (), 503, "registry_unavailable"
        )


class InternalError(ApiError):
    """Anything unexpected (500): the client learns only that, and the request id to quote."""

    def __init__(self) -> None:
        super().__init__(
            "an internal error occurred; retry later, and quote the request id if it persists",
            (),
            500,
            "internal_error",
        )


class NotFound(ApiError):
    """Unknown route or resource (404)."""

    def __init__(self, message: str = "not found") -> None:
        super().__init__(message, (), 404, "not_found")


class MethodNotAllowed(ApiError):
    """Known route, wrong method (405)."""

    def __init__(self, method: str, allowed: Iterable[str] = ()) -> None:
        allowed_list = sorted(allowed)
        headers = {"Allow": ", ".join(allowed_list)} if allowed_list else {}
        super().__init__(f"method {method} not allowed", (), 405, "method_not_allowed", headers)


class Unauthorized(ApiError):
    """No credential, or a wrong one (401); ``error`` is the RFC 6750 code for the challenge."""

    def __init__(self, message: str, error: str | None = None) -> None:
        challenge = f'Bearer error="{error}"' if error else "Bearer"
        super().__init__(message, (), 401, "unauthorized", {"WWW-Authenticate": challenge})


class Forbidden(ApiError):
    """A valid credential without the scope the operation needs (403)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, (), 403, "forbidden")


class Conflict(ApiError):
    """A retraining job is already running (409)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, (), 409, "conflict")


class TooManyRequests(ApiError):
    """Rate limit exceeded (429)."""

    def __init__(self, retry_after: int, headers: Mapping[str, str] | None = None) -> None:
        message = f"too many requests; retry in {retry_after} s"
        every = {**(headers or {}), "Retry-After": str(retry_after)}
        super().__init__(message, (), 429, "too_many_requests", every)


def error_body(error: ApiError, request_id: str | None = None) -> dict[str, Any]:
    """The JSON body of an error response (the only place this shape is built).

    A server error (5xx) carries ``request_id``: the log has the details under it.
    """
    body: dict[str, Any] = {
        "error": error.code,
        "message": error.message,
        "detail": [{"field": e.field, "reason": e.reason} for e in error.detail],
    }
    if error.status >= 500 and request_id:
        body["request_id"] = request_id
    return body


def field_path(*parts: str | int) -> str:
    """A dotted field path (``records.3.state``); an empty key is shown as ``""``."""
    return ".".join('""' if part == "" else str(part) for part in parts)


def _order(error: FieldError) -> tuple[list[Any], str]:
    """Sort fields naturally (records.2 before records.10) so both apps list them alike."""
    parts = [int(p) if p.isascii() and p.isdigit() else p for p in error.field.split(".")]
    return ([(0, p) if isinstance(p, int) else (1, p) for p in parts], error.reason)
