"""Gateway errors: what a client sees, with one code and one HTTP status each.

    GatewayError                 code            HTTP
    ├── Unauthorized             unauthorized     401
    ├── Forbidden                forbidden        403
    ├── InvalidRequest           invalid_request  400
    ├── NotFound                 not_found        404
    ├── RateLimited              rate_limited     429  (+ retry_after_ms)
    ├── BudgetExceeded           budget_exceeded  429  (+ scope)
    ├── ProviderFailed           provider_error   502
    ├── ProviderTimedOut         provider_timeout 504
    ├── Unavailable              unavailable      503
    └── InternalError            internal         500

Provider errors are translated into these in one place (``from_provider_error``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from providers.errors import (
    CircuitOpen,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderTimeout,
    StreamInterrupted,
)


class GatewayError(Exception):
    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}


class Unauthorized(GatewayError):
    code, status = "unauthorized", 401


class Forbidden(GatewayError):
    code, status = "forbidden", 403


class InvalidRequest(GatewayError):
    code, status = "invalid_request", 400


class NotFound(GatewayError):
    code, status = "not_found", 404


class RateLimited(GatewayError):
    code, status = "rate_limited", 429

    def __init__(self, message: str, *, retry_after_ms: int) -> None:
        super().__init__(message, retry_after_ms=retry_after_ms)
        self.retry_after_ms = retry_after_ms


class BudgetExceeded(GatewayError):
    code, status = "budget_exceeded", 429

    def __init__(self, message: str, *, scope: str) -> None:
        super().__init__(message, scope=scope)
        self.scope = scope


class ProviderFailed(GatewayError):
    code, status = "provider_error", 502


class ProviderTimedOut(GatewayError):
    code, status = "provider_timeout", 504


class Unavailable(GatewayError):
    code, status = "unavailable", 503


class InternalError(GatewayError):
    code, status = "internal", 500


_REASONS: dict[type[ProviderError], str] = {
    ProviderRateLimited: "is rate limiting us",
    ProviderOverloaded: "is overloaded or unavailable",
    CircuitOpen: "is temporarily skipped after repeated failures",
    ProviderConnectionError: "could not be reached or dropped the connection",
    ProviderBadRequest: "rejected the request",
    ProviderAuthError: "refused our credentials",
}


def from_provider_error(exc: ProviderError) -> GatewayError:
    """The one translation from provider failures to what the client is told."""
    cause = exc.cause if isinstance(exc, StreamInterrupted) else exc
    after = " after the answer had started" if isinstance(exc, StreamInterrupted) else ""
    provider = cause.provider or "the provider"
    if isinstance(cause, ProviderTimeout):
        return ProviderTimedOut(f"{provider} timed out{after}", provider=cause.provider)
    reason = _REASONS.get(type(cause), "failed")
    return ProviderFailed(f"{provider} {reason}{after}", provider=cause.provider)
