"""What providers report is checked before it is streamed or billed: text is a string,
a token count a whole number >= 0; anything else makes the event malformed (TypeError,
which the read loops turn into a broken stream), on every provider's mapping."""

from __future__ import annotations

from typing import Any

import pytest

from providers.anthropic_provider import map_anthropic_data
from providers.base import TextDelta, UsageReport, delta_text, token_count
from providers.openai_provider import map_openai_data


def test_well_typed_values_pass_and_absent_ones_are_none() -> None:
    assert delta_text("Hi") == "Hi" and delta_text("") == "" and delta_text(None) is None
    assert token_count(0) == 0 and token_count(12) == 12 and token_count(None) is None


@pytest.mark.parametrize("value", [5, ["a"], {"t": "a"}, b"a"])
def test_text_that_is_not_a_string_is_malformed(value: object) -> None:
    with pytest.raises(TypeError):
        delta_text(value)


@pytest.mark.parametrize("value", [-1, "3", 2.0, True, [1]])
def test_a_count_that_is_not_a_whole_number_is_malformed(value: object) -> None:
    with pytest.raises(TypeError):
        token_count(value)


@pytest.mark.parametrize("data", [
    {"choices": [{"delta": {"content": 5}}]},
    {"choices": [], "usage": {"prompt_tokens": "7", "completion_tokens": 1}},
    {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": -2}},
])
def test_openai_chunks_with_wrong_types(data: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        map_openai_data(data)


@pytest.mark.parametrize("data", [
    {"type": "content_block_delta", "delta": {"type": "text_delta", "text": 5}},
    {"type": "message_start", "message": {"usage": {"input_tokens": 3,
                                                    "cache_read_input_tokens": "9"}}},
    {"type": "message_delta", "usage": {"output_tokens": 1.5}, "delta": {}},
])
def test_anthropic_events_with_wrong_types(data: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        map_anthropic_data(data)


def test_well_typed_events_still_map() -> None:
    assert map_openai_data({"choices": [{"delta": {"content": "a"}}],
                            "usage": {"prompt_tokens": 3, "completion_tokens": 0}}) == [
        TextDelta("a"), UsageReport(prompt_tokens=3, completion_tokens=0)]
    assert map_anthropic_data({"type": "message_start", "message": {"usage": {
        "input_tokens": 3, "cache_read_input_tokens": 4}}}) == [UsageReport(prompt_tokens=7)]
