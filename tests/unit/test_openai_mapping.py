import pytest

from providers.base import Finish, ProviderEvent, TextDelta, UsageReport, merge_text
from providers.errors import (
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderOverloaded,
    ProviderRateLimited,
)
from providers.openai_provider import map_openai_data


def _chunk(delta: dict[str, str] | None = None, finish: str | None = None) -> dict[str, object]:
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}


def test_text_finish_and_usage() -> None:
    assert map_openai_data(_chunk({"role": "assistant", "content": ""})) == []
    assert map_openai_data(_chunk({"content": "Hi"})) == [TextDelta("Hi")]
    assert map_openai_data(_chunk(finish="length")) == [Finish("length")]
    assert map_openai_data(_chunk(finish="content_filter")) == [Finish("stop")]
    usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    assert map_openai_data(usage) == [UsageReport(prompt_tokens=7, completion_tokens=3)]


@pytest.mark.parametrize(("kind", "error"), [
    ("rate_limit_exceeded", ProviderRateLimited), ("server_error", ProviderOverloaded),
    ("invalid_request_error", ProviderBadRequest), ("something_new", ProviderConnectionError),
])
def test_in_stream_errors_by_type(kind: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        map_openai_data({"error": {"message": "boom", "type": kind}})


def test_merge_text_joins_consecutive_deltas_only() -> None:
    usage, finish = UsageReport(prompt_tokens=3), Finish("stop")
    events: list[ProviderEvent] = [TextDelta("a"), TextDelta("b"), usage, TextDelta("c"),
                                   TextDelta("d"), TextDelta("e"), finish]
    assert merge_text(events) == [TextDelta("ab"), usage, TextDelta("cde"), finish]
    assert merge_text([TextDelta("x")]) == [TextDelta("x")]
    assert merge_text([]) == []
    assert merge_text([usage, finish]) == [usage, finish]
