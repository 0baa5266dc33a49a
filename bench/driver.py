"""Runs the load generator as its own process (pinned to the load core) and measures the
gateway process around it: CPU seconds before/after, RSS samples while it runs."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import procstat
from services import BENCH, Service, pinned, tool_python

LOAD = str(BENCH / "load.py")


@dataclass
class Measured:
    """What one load-generator process reported, and what the services cost meanwhile."""

    segments: list[dict[str, Any]]
    wall_s: float
    cpu_s: dict[str, float] = field(default_factory=dict)  # per watched service
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (s, bytes)

    def by_tag(self, tag: str) -> list[dict[str, Any]]:
        return [s for s in self.segments if s.get("tag") == tag]


class Driver:
    def __init__(self, *, load_core: int | None, timeout_s: float = 1800.0) -> None:
        self.load_core = load_core
        self.timeout_s = timeout_s
        self.load_cpu_s = 0.0  # every load process's CPU, for the report

    def _cmd(self) -> list[str]:
        return pinned([tool_python(), LOAD, "--spec", "-"], self.load_core)

    def run(self, segments: Sequence[dict[str, Any]], *, watch: Sequence[Service] = (),
            sample: Service | None = None, sample_every_s: float = 1.0) -> Measured:
        """Run ``segments`` in one load process; CPU of each ``watch``ed service over the
        whole process; RSS of ``sample`` every ``sample_every_s`` while it runs."""
        meters = {s.name: procstat.CpuMeter(s.pid) for s in watch}
        for meter in meters.values():
            meter.start()
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        started = time.monotonic()

        def sampler() -> None:
            assert sample is not None
            while not stop.wait(sample_every_s):
                samples.append((time.monotonic() - started, procstat.rss_bytes(sample.pid)))

        thread = threading.Thread(target=sampler, daemon=True) if sample else None
        if thread:
            samples.append((0.0, procstat.rss_bytes(sample.pid)))  # type: ignore[union-attr]
            thread.start()
        try:
            proc = subprocess.run(self._cmd(),
                                  input=json.dumps({"segments": list(segments)}) + "\n",
                                  capture_output=True, text=True, timeout=self.timeout_s)
        finally:
            stop.set()
            if thread:
                thread.join()
        wall = time.monotonic() - started
        cpu = {name: meter.stop() for name, meter in meters.items()}
        out = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        for segment in out:
            self.load_cpu_s += float(segment.get("client_cpu_s") or 0.0)
        if proc.returncode != 0 and not out:
            raise RuntimeError(f"load generator failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-800:]}")
        return Measured(segments=out, wall_s=wall, cpu_s=cpu, rss_samples=samples)

    def idle(self, segment: dict[str, Any], service: Service, *,
             settle_s: float = 3.0) -> dict[str, Any]:
        """Memory per idle WebSocket: RSS before, open N idle sockets, settle, RSS after."""
        before = procstat.rss_bytes(service.pid)
        proc = subprocess.Popen(self._cmd(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps({"segments": [segment]}) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            if not line.startswith("{"):
                raise RuntimeError(f"idle sockets: {line.strip() or proc.stderr.read()[-500:]}")
            ready = json.loads(line)
            time.sleep(settle_s)
            after = procstat.rss_bytes(service.pid)
            proc.stdin.write("close\n")
            proc.stdin.flush()
            closed = json.loads(proc.stdout.readline() or "{}")
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        time.sleep(settle_s)
        released = procstat.rss_bytes(service.pid)
        opened = int(ready.get("ready", 0))
        return {"opened": opened, "failures": ready.get("failures", 0),
                "alive_at_close": closed.get("alive_at_close"),
                "rss_before": before, "rss_after": after, "rss_after_close": released,
                "bytes_per_connection": (after - before) / opened if opened else None}
