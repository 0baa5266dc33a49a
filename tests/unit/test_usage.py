"""Usage as a fold over provider events, and the final figures billed from it."""

from __future__ import annotations

from functools import reduce

import pytest

from providers.base import Finish, ProviderEvent, TextDelta, UsageReport
from providers.usage import Usage, UsageSnapshot, accumulate, final_usage


def fold(events: list[ProviderEvent]) -> UsageSnapshot:
    return reduce(lambda snap, event: accumulate(event, snap), events, UsageSnapshot())


def test_empty_stream_is_the_empty_snapshot() -> None:
    assert fold([]) == UsageSnapshot()


def test_text_deltas_count_parts_and_characters() -> None:
    snap = fold([TextDelta("Hel"), TextDelta("lo "), TextDelta("wörld")])
    assert snap.text_parts == 3
    assert snap.generated_chars == 11


def test_accumulate_does_not_mutate_its_input() -> None:
    start = UsageSnapshot()
    after = accumulate(TextDelta("abc"), start)
    assert start == UsageSnapshot()
    assert after.generated_chars == 3


def test_usage_reports_in_separate_events_combine() -> None:
    snap = fold([UsageReport(prompt_tokens=12), TextDelta("x"),
                 UsageReport(completion_tokens=7)])
    assert (snap.reported_prompt, snap.reported_completion) == (12, 7)


def test_a_later_none_does_not_erase_an_earlier_report() -> None:
    snap = fold([UsageReport(prompt_tokens=12, completion_tokens=3),
                 UsageReport(prompt_tokens=None, completion_tokens=None)])
    assert (snap.reported_prompt, snap.reported_completion) == (12, 3)


def test_a_later_report_replaces_an_earlier_one() -> None:
    snap = fold([UsageReport(completion_tokens=3), UsageReport(completion_tokens=9)])
    assert snap.reported_completion == 9


def test_zero_is_a_report_not_a_missing_value() -> None:
    snap = fold([UsageReport(prompt_tokens=5, completion_tokens=0)])
    assert snap.reported_completion == 0
    usage = final_usage(snap, counted_prompt=99, count_completion=lambda: 42)
    assert usage == Usage(prompt_tokens=5, completion_tokens=0)


@pytest.mark.parametrize("reason", ["stop", "length", "cancelled", "error"])
def test_finish_reason_is_recorded(reason: str) -> None:
    assert fold([TextDelta("a"), Finish(reason)]).finish_reason == reason  # type: ignore[arg-type]


def test_reported_figures_win_and_counting_is_skipped() -> None:
    def must_not_count() -> int:
        raise AssertionError("counted although the provider reported completion tokens")

    snap = fold([TextDelta("abc"), UsageReport(prompt_tokens=10, completion_tokens=4)])
    usage = final_usage(snap, counted_prompt=11, count_completion=must_not_count)
    assert usage == Usage(prompt_tokens=10, completion_tokens=4)


def test_counted_figures_fill_what_is_missing() -> None:
    snap = fold([TextDelta("abc"), UsageReport(prompt_tokens=10)])
    assert final_usage(snap, counted_prompt=11, count_completion=lambda: 3) == Usage(10, 3)
    snap = fold([TextDelta("abc"), UsageReport(completion_tokens=2)])
    assert final_usage(snap, counted_prompt=11, count_completion=lambda: 3) == Usage(11, 2)


def test_nothing_reported_is_all_counted() -> None:
    usage = final_usage(fold([TextDelta("abc")]), counted_prompt=11, count_completion=lambda: 3)
    assert usage == Usage(prompt_tokens=11, completion_tokens=3)


def test_usage_totals_and_dict() -> None:
    usage = Usage(prompt_tokens=11, completion_tokens=3)
    assert usage.total_tokens == 14
    assert usage.as_dict() == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
