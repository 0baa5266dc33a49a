"""CPU time and memory of a process and its descendants, read from ``/proc`` (Linux).

A gateway may be a tree (LiteLLM with workers, ``npx`` → ``node``), so every figure is
the sum over the live tree rooted at the process the benchmark started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid``'s tree (live processes only)."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / TICKS


def _status_kib(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """Resident set size of the tree, bytes."""
    return sum(_status_kib(p, b"VmRSS:") for p in tree(pid)) * 1024


def peak_rss_bytes(pid: int) -> int:
    """Sum of each live process's high-water RSS (VmHWM), bytes."""
    return sum(_status_kib(p, b"VmHWM:") for p in tree(pid)) * 1024


@dataclass(slots=True)
class CpuMeter:
    """CPU seconds of a tree between ``start()`` and ``stop()``."""

    pid: int
    _start: float = 0.0
    seconds: float = 0.0

    def start(self) -> None:
        self._start = cpu_seconds(self.pid)

    def stop(self) -> float:
        self.seconds = cpu_seconds(self.pid) - self._start
        return self.seconds
