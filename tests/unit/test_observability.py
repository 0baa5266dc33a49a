"""The log lines as `chatgate serve` writes them: one JSON object a line on stderr."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from gateway import observability
from gateway.observability import Metrics

SCRIPT = """
import logging, structlog
from gateway.observability import configure_logging
configure_logging("INFO")
log = structlog.get_logger("chatgate.test")
class Odd:
    def __repr__(self):
        return "<odd>"
log.info("turn", request_id="r1", timings_ms={"stream": 1.5}, odd=Odd())
log.debug("hidden")
logging.getLogger("chatgate.stdlib").warning("from the standard library")
log.warning("after", n=2)
try:
    1 / 0
except ZeroDivisionError:
    log.exception("failed")
"""


def test_json_lines_on_stderr_in_order() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, check=True,
                          timeout=60)
    lines = done.stderr.decode().splitlines()
    assert lines[1] == "from the standard library"  # between the two structlog lines
    turn, after, failed = (orjson.loads(lines[i]) for i in (0, 2, 3))
    assert turn["event"] == "turn" and turn["level"] == "info"
    assert turn["request_id"] == "r1" and turn["timings_ms"] == {"stream": 1.5}
    assert turn["odd"] == "<odd>"  # a value JSON cannot hold goes through the fallback
    assert turn["timestamp"].endswith("Z")
    assert after == {**after, "event": "after", "level": "warning", "n": 2}
    assert "ZeroDivisionError" in failed["exception"]
    assert len(lines) == 4  # "hidden" (debug) is not written
    assert not done.stdout


def test_json_lines_when_stderr_has_no_binary_buffer() -> None:
    """A stderr replaced by a text-only stream (as some hosts do) still gets JSON lines."""
    script = ("import io, sys, structlog\n"
              "from gateway.observability import configure_logging\n"
              "real, sys.stderr = sys.stderr, io.StringIO()\n"
              "configure_logging('INFO')\n"
              "structlog.get_logger('t').info('turn', n=1)\n"
              "real.write(sys.stderr.getvalue())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True,
                          timeout=60)
    [line] = done.stderr.decode().splitlines()
    assert orjson.loads(line) == {**orjson.loads(line), "event": "turn", "n": 1,
                                  "level": "info"}


def test_a_series_is_looked_up_once_and_counts_as_labels_would() -> None:
    metrics = Metrics()
    first = metrics.series(metrics.turns, "growain", "stop")
    assert metrics.series(metrics.turns, "growain", "stop") is first
    assert metrics.series(metrics.turns, "growain", "length") is not first
    assert metrics.series(metrics.tokens, "growain", "stop") is not first  # another metric
    first.inc()
    metrics.series(metrics.turns, "growain", "stop").inc(2)
    assert metrics.registry.get_sample_value(
        "chatgate_turns_total", {"brand": "growain", "outcome": "stop"}) == 3.0


def test_series_beyond_the_remembered_number_still_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory the lookups take is bounded: past ``MAX_SERIES``, a series is looked up
    each time, and still counts."""
    monkeypatch.setattr(observability, "MAX_SERIES", 2)
    metrics = Metrics()
    for outcome in ("stop", "length", "error", "error"):
        metrics.series(metrics.turns, "growain", outcome).inc()
    assert metrics.registry.get_sample_value(
        "chatgate_turns_total", {"brand": "growain", "outcome": "error"}) == 2.0
    assert len(metrics._series) == 2
