"""The mock provider: deterministic, bounded by max_tokens, honest about usage, and
honouring its configured delays."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import providers.mock
from gateway.config import MockSettings
from memory.tokens import TokenCounter
from providers.base import (
    ChatMessage,
    Finish,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    UsageReport,
)
from providers.mock import MockProvider, mock_answer_words


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def provider(counter: TokenCounter, settings: MockSettings | None = None) -> MockProvider:
    chosen = settings or MockSettings()
    return MockProvider(lambda model: chosen, counter)


def request(content: str = "Hello there", *, model: str = "mock-1", max_tokens: int = 256,
            system: str = "Be brief.") -> ProviderRequest:
    return ProviderRequest(model=model, max_tokens=max_tokens,
                           messages=(ChatMessage("system", system), ChatMessage("user", content)))


async def events(mock: MockProvider, req: ProviderRequest) -> list[ProviderEvent]:
    return [event async for event in mock.stream(req)]


def deltas(evs: list[ProviderEvent]) -> list[str]:
    return [e.text for e in evs if isinstance(e, TextDelta)]


async def test_same_request_gives_the_same_deltas(counter: TokenCounter) -> None:
    mock = provider(counter)
    assert await events(mock, request()) == await events(mock, request())


async def test_same_request_same_answer_across_instances(counter: TokenCounter) -> None:
    first = await events(provider(counter), request())
    second = await events(provider(counter), request())
    assert deltas(first) == deltas(second)


@pytest.mark.parametrize(
    "other",
    [request("Hello there!"), request(model="mock-2"), request(system="Be verbose.")],
)
async def test_different_requests_give_different_text(counter: TokenCounter,
                                                      other: ProviderRequest) -> None:
    mock = provider(counter)
    assert "".join(deltas(await events(mock, request()))) != "".join(
        deltas(await events(mock, other)))


def test_answer_words_are_a_pure_function_of_the_request() -> None:
    assert mock_answer_words(request(), 30) == mock_answer_words(request(), 30)
    assert mock_answer_words(request(), 30) != mock_answer_words(request("other"), 30)
    assert mock_answer_words(request(), 10) == mock_answer_words(request(), 30)[:10]


async def test_stream_is_deltas_then_usage_then_finish(counter: TokenCounter) -> None:
    evs = await events(provider(counter, MockSettings(answer_tokens=6)), request())
    *text, usage, finish = evs
    assert text and all(isinstance(e, TextDelta) for e in text)
    assert isinstance(usage, UsageReport)
    assert finish == Finish("stop")


async def test_answer_length_follows_answer_tokens(counter: TokenCounter) -> None:
    evs = await events(provider(counter, MockSettings(answer_tokens=6)), request())
    # A header naming the message count and turn, then one word per delta.
    texts = deltas(evs)
    assert len(texts) == 1 + 6
    assert texts[0] == "[2 messages, turn 1]"
    assert all(t.startswith(" ") and len(t.split()) == 1 for t in texts[1:])


async def test_stops_at_max_tokens_with_finish_length(counter: TokenCounter) -> None:
    evs = await events(provider(counter, MockSettings(answer_tokens=24)),
                       request(max_tokens=4))
    assert len(deltas(evs)) <= 4
    assert evs[-1] == Finish("length")


async def test_usage_equals_counting_its_own_output(counter: TokenCounter) -> None:
    req = request(max_tokens=10)
    evs = await events(provider(counter, MockSettings(answer_tokens=30)), req)
    usage = next(e for e in evs if isinstance(e, UsageReport))
    assert usage.prompt_tokens == counter.count_messages(req.messages)
    assert usage.completion_tokens == counter.count("".join(deltas(evs)))


@pytest.mark.parametrize("max_tokens", [1, 3, 8])
async def test_reported_completion_never_exceeds_max_tokens(counter: TokenCounter,
                                                            max_tokens: int) -> None:
    evs = await events(provider(counter, MockSettings(answer_tokens=24)),
                       request(max_tokens=max_tokens))
    usage = next(e for e in evs if isinstance(e, UsageReport))
    assert usage.completion_tokens is not None
    assert usage.completion_tokens <= max_tokens


async def test_settings_are_chosen_per_model(counter: TokenCounter) -> None:
    chosen: list[str] = []

    def settings_for(model: str) -> MockSettings:
        chosen.append(model)
        return MockSettings(answer_tokens=2 if model == "tiny" else 12)

    mock = MockProvider(settings_for, counter)
    assert len(deltas(await events(mock, request(model="tiny")))) == 3
    assert len(deltas(await events(mock, request(model="big")))) == 13
    assert chosen == ["tiny", "big"]


class SleepRecorder:
    """Stands in for ``asyncio`` in the mock module: records sleeps in the event log."""

    def __init__(self, log: list[tuple[str, object]]) -> None:
        self.log = log

    async def sleep(self, seconds: float) -> None:
        self.log.append(("sleep", seconds))


async def logged_stream(
    counter: TokenCounter, settings: MockSettings, monkeypatch: pytest.MonkeyPatch,
    max_tokens: int = 256,
) -> list[tuple[str, object]]:
    log: list[tuple[str, object]] = []
    monkeypatch.setattr(providers.mock, "asyncio", SimpleNamespace(sleep=SleepRecorder(log).sleep))
    async for event in provider(counter, settings).stream(request(max_tokens=max_tokens)):
        log.append((event.type, event))
    return log


async def test_first_token_delay_comes_before_the_first_delta(
    counter: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await logged_stream(counter, MockSettings(answer_tokens=3, first_token_delay_ms=250),
                              monkeypatch)
    assert log[0] == ("sleep", 0.25)
    assert log[1][0] == "text"
    assert [entry for entry in log if entry[0] == "sleep"] == [("sleep", 0.25)]


async def test_token_delay_comes_between_deltas(
    counter: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await logged_stream(counter, MockSettings(answer_tokens=3, token_delay_ms=40),
                              monkeypatch)
    kinds = [kind for kind, _ in log]
    assert kinds == ["text", "sleep", "text", "sleep", "text", "sleep", "text", "usage",
                     "finish"]
    assert all(value == 0.04 for kind, value in log if kind == "sleep")


async def test_no_delays_configured_means_no_sleeps(
    counter: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await logged_stream(counter, MockSettings(answer_tokens=5), monkeypatch)
    assert all(kind != "sleep" for kind, _ in log)


async def test_real_short_delays_keep_the_same_output(counter: TokenCounter) -> None:
    fast = await events(provider(counter, MockSettings(answer_tokens=4)), request())
    slow = await events(provider(counter, MockSettings(answer_tokens=4, token_delay_ms=0.1,
                                                       first_token_delay_ms=0.1)), request())
    assert fast == slow


def test_name_is_mock(counter: TokenCounter) -> None:
    assert provider(counter).name == "mock"
