"""The benchmark report's sweep verdict (bench/report.py): which level a subject reached."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

# Loaded from its file: bench/ on sys.path would put bench/budgets.py before the budgets
# package for every later import.
_SPEC = importlib.util.spec_from_file_location(
    "bench_report", Path(__file__).resolve().parents[2] / "bench" / "report.py")
assert _SPEC is not None and _SPEC.loader is not None
report = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(report)


def _level(added: float, tps: float = 100.0, **extra: object) -> dict[str, object]:
    return {"added_ttft_p99": added, "ttft_p99": added + 20.0, "turns_per_s": tps, **extra}


@pytest.mark.parametrize(("result", "passed"), [
    (_level(9.9), True),
    (_level(10.0), False),
    (_level(2.0, errors=3), False),
    (_level(2.0, failed="no output"), False),
    ({"turns_per_s": 1.0}, False),  # never measured against the direct path
])
def test_a_level_passes_under_the_budget_with_no_errors(result: dict[str, object],
                                                          passed: bool) -> None:
    assert report.sweep_passed(result) is passed


def test_the_best_level_is_the_last_before_the_first_over() -> None:
    subject = SimpleNamespace(results={"sweep": {10: _level(1.0, 7.0), 50: _level(3.0, 38.0),
                                                 100: _level(12.0, 70.0),
                                                 200: _level(4.0, 140.0)}})
    assert report.sweep_best(subject) == ("50", "38.0")


def test_a_subject_within_budget_everywhere_is_at_least_the_top_level() -> None:
    subject = SimpleNamespace(results={"sweep": {10: _level(1.0), 50: _level(2.0, 41.5)}})
    assert report.sweep_best(subject) == ("≥ 50", "41.5")


def test_a_subject_over_at_the_first_level_says_by_how_much() -> None:
    subject = SimpleNamespace(results={"sweep": {10: _level(14.25)}})
    level, tps = report.sweep_best(subject)
    assert level.startswith("< 10") and "14.2" in level and tps == "—"


def test_a_retried_cell_shows_both_attempts() -> None:
    retried = _level(4.0, 75.0, direct_ttft_p99=22.5, first_attempt={"added_ttft_p99": 31.5})
    direct = SimpleNamespace(results={"sweep": {100: {"ttft_p99": 20.0,
                                                      "turns_per_s": 78.0}}})
    subject = SimpleNamespace(name="chatgate-ws", results={"sweep": {100: retried}})
    bench = SimpleNamespace(direct=direct, subjects=[subject],
                            plan=SimpleNamespace(sweep_min_turns=100))
    table = "\n".join(report._sweep(bench))
    assert "4.0 (75.0; retried against direct p99 22.5, first attempt 31.5)" in table
    assert "at least 100 turns" in table
