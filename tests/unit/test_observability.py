"""The log lines as `chatgate serve` writes them: one JSON object a line on stderr."""

from __future__ import annotations

import subprocess
import sys

import orjson

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
