"""What providers report is checked before it is streamed or billed, here on the SSE
providers' mappings (OpenAI, Anthropic; Bedrock's are in
tests/providers/test_bedrock_provider.py): text that is not a string makes the event
malformed (TypeError, which the read loops turn into a broken stream); a token count that
is not a whole number >= 0 is not billed: it counts as not reported, so the gateway's own
count stands."""

from __future__ import annotations

import pytest

from providers.anthropic_provider import map_anthropic_data
from providers.base import Finish, TextDelta, UsageReport, delta_text, token_count
from providers.openai_provider import map_openai_data


def test_well_typed_values_pass_and_absent_ones_are_none() -> None:
    assert delta_text("Hi") == "Hi" and delta_text("") == "" and delta_text(None) is None
    assert token_count(0) == 0 and token_count(12) == 12 and token_count(None) is None
    assert token_count(12.0) == 12 and type(token_count(12.0)) is int


@pytest.mark.parametrize("value", [5, ["a"], {"t": "a"}, b"a"])
def test_text_that_is_not_a_string_is_malformed(value: object) -> None:
    with pytest.raises(TypeError):
        delta_text(value)


@pytest.mark.parametrize("value", [-1, "3", 2.5, -2.0, True, [1]])
def test_a_count_that_is_not_a_whole_number_is_not_billed(value: object) -> None:
    assert token_count(value) is None


def test_openai_chunks() -> None:
    with pytest.raises(TypeError):
        map_openai_data({"choices": [{"delta": {"content": 5}}]})
    assert map_openai_data({"choices": [], "usage": {"prompt_tokens": "7",
                                                      "completion_tokens": -2}}) == [
        UsageReport(prompt_tokens=None, completion_tokens=None)]
    assert map_openai_data({"choices": [{"delta": {"content": "a"}}],
                            "usage": {"prompt_tokens": 3, "completion_tokens": 0}}) == [
        TextDelta("a"), UsageReport(prompt_tokens=3, completion_tokens=0)]


def test_anthropic_events() -> None:
    with pytest.raises(TypeError):
        map_anthropic_data({"type": "content_block_delta",
                            "delta": {"type": "text_delta", "text": 5}})
    assert map_anthropic_data({"type": "message_start", "message": {"usage": {
        "input_tokens": 3, "cache_read_input_tokens": "9"}}}) == [UsageReport(prompt_tokens=3)]
    assert map_anthropic_data({"type": "message_delta", "usage": {"output_tokens": 1.5},
                               "delta": {"stop_reason": "end_turn"}}) == [Finish("stop")]
    assert map_anthropic_data({"type": "message_start", "message": {"usage": {
        "input_tokens": 3, "cache_read_input_tokens": 4}}}) == [UsageReport(prompt_tokens=7)]
