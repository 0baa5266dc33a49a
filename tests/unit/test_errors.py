"""Gateway errors: codes and statuses per the contract, the provider translation, and
the OpenAI-shaped HTTP error responses."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import (
    BudgetExceeded,
    Forbidden,
    GatewayError,
    InternalError,
    InvalidRequest,
    NotFound,
    ProviderFailed,
    ProviderTimedOut,
    RateLimited,
    Unauthorized,
    Unavailable,
    from_provider_error,
)
from gateway.http_errors import error_body, error_response
from providers.errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderTimeout,
    StreamInterrupted,
)


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (Unauthorized("x"), "unauthorized", 401),
        (Forbidden("x"), "forbidden", 403),
        (InvalidRequest("x"), "invalid_request", 400),
        (NotFound("x"), "not_found", 404),
        (RateLimited("x", retry_after_ms=10), "rate_limited", 429),
        (BudgetExceeded("x", scope="brand_month"), "budget_exceeded", 429),
        (ProviderFailed("x"), "provider_error", 502),
        (ProviderTimedOut("x"), "provider_timeout", 504),
        (Unavailable("x"), "unavailable", 503),
        (InternalError("x"), "internal", 500),
    ],
)
def test_code_and_status_follow_the_contract(error: GatewayError, code: str, status: int
                                             ) -> None:
    assert (error.code, error.status) == (code, status)
    assert isinstance(error, GatewayError)
    assert error.to_dict()["code"] == code


def test_rate_limited_carries_retry_after_ms() -> None:
    error = RateLimited("slow", retry_after_ms=1200)
    assert error.retry_after_ms == 1200
    assert error.to_dict() == {"code": "rate_limited", "message": "slow",
                               "retry_after_ms": 1200}


def test_budget_exceeded_carries_scope() -> None:
    error = BudgetExceeded("over", scope="conversation")
    assert error.scope == "conversation"
    assert error.to_dict() == {"code": "budget_exceeded", "message": "over",
                               "scope": "conversation"}


# --- from_provider_error -----------------------------------------------------------------


def test_provider_timeout_maps_to_provider_timeout() -> None:
    error = from_provider_error(ProviderTimeout("slow", provider="openai"))
    assert isinstance(error, ProviderTimedOut)
    assert (error.code, error.status) == ("provider_timeout", 504)
    assert error.extra == {"provider": "openai"}
    assert "openai" in error.message


@pytest.mark.parametrize(
    "exc",
    [
        ProviderRateLimited("429", provider="openai"),
        ProviderOverloaded("503", provider="openai", status=503),
        ProviderConnectionError("reset", provider="openai"),
        ProviderBadRequest("400", provider="openai", status=400),
        ProviderAuthError("401", provider="openai", status=401),
        ProviderError("?", provider="openai"),
    ],
)
def test_other_provider_errors_map_to_provider_error(exc: ProviderError) -> None:
    error = from_provider_error(exc)
    assert isinstance(error, ProviderFailed)
    assert (error.code, error.status) == ("provider_error", 502)
    assert error.extra == {"provider": "openai"}
    assert "started" not in error.message


def test_provider_error_message_does_not_leak_the_upstream_text() -> None:
    error = from_provider_error(ProviderAuthError("key sk-secret-123 refused",
                                                  provider="openai"))
    assert "sk-secret-123" not in error.message


def test_interrupted_timeout_maps_to_provider_timeout_and_says_it_had_started() -> None:
    error = from_provider_error(StreamInterrupted(ProviderTimeout("t", provider="anthropic")))
    assert error.code == "provider_timeout"
    assert "after the answer had started" in error.message
    assert error.extra == {"provider": "anthropic"}


def test_interrupted_connection_error_maps_to_provider_error_and_says_it_had_started() -> None:
    error = from_provider_error(
        StreamInterrupted(ProviderConnectionError("reset", provider="openai")))
    assert error.code == "provider_error"
    assert "after the answer had started" in error.message


def test_unnamed_provider_is_described_generically() -> None:
    error = from_provider_error(ProviderOverloaded("x"))
    assert error.message == "the provider is overloaded or unavailable"


def test_client_messages_name_no_internal_classes() -> None:
    for cause in (ProviderOverloaded("x", provider="openai"),
                  ProviderTimeout("x", provider="openai")):
        message = from_provider_error(StreamInterrupted(cause)).message
        assert "Provider" not in message and message.startswith("openai ")


# --- HTTP responses ----------------------------------------------------------------------


def test_error_body_has_the_openai_shape() -> None:
    body = error_body(NotFound("no such conversation"))
    assert body == {"error": {"message": "no such conversation", "type": "not_found",
                              "code": "not_found"}}


def test_error_response_status_and_json_body() -> None:
    response = error_response(BudgetExceeded("over", scope="user_day"))
    assert response.status == 429
    assert response.content_type == "application/json"
    assert isinstance(response.body, bytes)
    assert orjson.loads(response.body) == {"error": {
        "message": "over", "type": "budget_exceeded", "code": "budget_exceeded",
        "scope": "user_day"}}
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(("ms", "seconds"), [(1, "1"), (999, "1"), (1000, "1"),
                                             (1001, "2"), (1500, "2"), (0, "1"),
                                             (60_000, "60")])
def test_error_response_sets_retry_after_in_whole_seconds_rounded_up(ms: int, seconds: str
                                                                      ) -> None:
    response = error_response(RateLimited("slow", retry_after_ms=ms))
    assert response.status == 429
    assert response.headers["Retry-After"] == seconds
    assert isinstance(response.body, bytes)
    assert orjson.loads(response.body)["error"]["retry_after_ms"] == ms


def test_error_response_for_401_asks_for_a_bearer_token() -> None:
    response = error_response(Unauthorized("missing bearer token"))
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_error_response_keeps_extra_headers() -> None:
    response = error_response(NotFound("x"), headers={"X-Conversation-Id": "abc"})
    assert response.headers["X-Conversation-Id"] == "abc"
