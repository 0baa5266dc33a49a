"""Provider errors: one hierarchy, mapped once per provider at its I/O boundary.

    ProviderError                 any failure talking to a model provider
    ├── RetryableProviderError    worth another attempt (same or next provider)
    │   ├── ProviderRateLimited   429 / throttling; ``retry_after_s`` when the provider said
    │   ├── ProviderOverloaded    5xx, 529, service unavailable
    │   │   └── CircuitOpen       the router's breaker skips this provider for now
    │   ├── ProviderTimeout       connect, first-token or between-chunk timeout
    │   └── ProviderConnectionError  the connection failed or dropped
    └── FatalProviderError        retrying will not help
        ├── ProviderBadRequest    400/404/422: the request itself is wrong
        └── ProviderAuthError     401/403: credentials missing or refused

``StreamInterrupted`` wraps any of these once text has reached the client (and before the
provider's finish: after it, the answer is whole): the router never retries or falls back
after that point.
"""

from __future__ import annotations

from collections.abc import Mapping


class ProviderError(Exception):
    """Base class. ``provider`` names the provider kind that failed."""

    retryable = False

    def __init__(self, message: str, *, provider: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status


class RetryableProviderError(ProviderError):
    retryable = True


class ProviderRateLimited(RetryableProviderError):
    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = 429,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after_s = retry_after_s


class ProviderOverloaded(RetryableProviderError):
    pass


class CircuitOpen(ProviderOverloaded):
    """The router skipped the provider without a request: its circuit breaker is open."""


class ProviderTimeout(RetryableProviderError):
    pass


class ProviderConnectionError(RetryableProviderError):
    pass


class FatalProviderError(ProviderError):
    pass


class ProviderBadRequest(FatalProviderError):
    pass


class ProviderAuthError(FatalProviderError):
    pass


class StreamInterrupted(ProviderError):
    """The stream broke after output reached the client; ``cause`` says why."""

    def __init__(self, cause: ProviderError) -> None:
        super().__init__(str(cause), provider=cause.provider, status=cause.status)
        self.cause = cause


def error_for_status(
    status: int, message: str, *, provider: str, retry_after_s: float | None = None
) -> ProviderError:
    """Pure mapping from an HTTP status to the hierarchy (shared by every provider)."""
    if status == 429:
        return ProviderRateLimited(
            message, provider=provider, status=status, retry_after_s=retry_after_s
        )
    if status in (401, 403):
        return ProviderAuthError(message, provider=provider, status=status)
    if status == 408:
        return ProviderTimeout(message, provider=provider, status=status)
    if status >= 500 or status == 529:
        return ProviderOverloaded(message, provider=provider, status=status)
    return ProviderBadRequest(message, provider=provider, status=status)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` / ``retry-after-ms`` header values in seconds, if numeric."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (preferred) or ``retry-after`` headers."""
    millis = parse_retry_after(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    return parse_retry_after(headers.get("retry-after"))
