"""Where chatgate's gap to the floor lies: per turn or per streamed delta.

    .venv/bin/python bench/split.py                        # WebSocket, 3 rounds
    .venv/bin/python bench/split.py --protocol http --rounds 5

chatgate and the bare proxy (bench/bare_proxy.py) run at once on the gateway core, each
driven by its own load process at the same concurrency, against one upstream whose answers
are short (20 deltas) in one block and long (80 deltas) in the next, alternating, round
after round. The deltas come 20 ms apart in both, so each stream's deltas arrive at the
same rate and most reads hold one of them (a busy chatgate still joins about a tenth,
those that arrive together, into one frame: its frames per turn are printed): a
gateway's CPU per turn is then a fixed cost per turn plus a cost per delta. The slope
between the two lengths is the cost of a delta, and what is left of a short turn once its
deltas are taken out is the fixed cost.
(With the long answers' deltas closer together, it would join many more, and the slope
would mix that in.)
Both are measured for both gateways in the same windows, so a drift of the machine hits
them alike.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import services as svc
from compare import load_at_once
from load import raise_fd_limit
from run import GATEWAY_CORE, LOAD_CORE

LENGTHS = {"short": {"tokens": 20, "ttft_ms": 0, "delay_ms": 20},
           "long": {"tokens": 80, "ttft_ms": 0, "delay_ms": 20}}


@dataclass
class Subject:
    name: str
    service: svc.Service
    cpu_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LENGTHS})
    frames: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LENGTHS})

    def per_delta_us(self) -> float:
        short, long = (statistics.median(self.cpu_ms[k]) for k in LENGTHS)
        extra = LENGTHS["long"]["tokens"] - LENGTHS["short"]["tokens"]
        return 1000 * (long - short) / extra

    def per_turn_ms(self) -> float:
        short = statistics.median(self.cpu_ms["short"])
        return short - LENGTHS["short"]["tokens"] * self.per_delta_us() / 1000


def measure(subjects: list[Subject], length: str, secret: str,
            args: argparse.Namespace) -> None:
    """Both gateways at once, each under its own load process, one answer length."""
    measured = load_at_once([s.service for s in subjects], secret, args, tag="split")
    for subject, (window, cpu_ms) in zip(subjects, measured, strict=True):
        if window.get("errors"):
            raise SystemExit(f"{subject.name} failed {window['errors']} turns: "
                             f"{window.get('error_samples')}")
        subject.cpu_ms[length].append(cpu_ms)
        subject.frames[length].append(float(window.get("deltas_per_turn") or 0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", choices=("ws", "http"), default="ws")
    parser.add_argument("--concurrency", type=int, default=100, help="streams per gateway")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per block")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raise_fd_limit()
    command = shlex.join([".venv/bin/python", "bench/split.py", *sys.argv[1:]])
    secret = svc.new_secret()
    with tempfile.TemporaryDirectory(prefix="chatgate-split-") as tmp:
        workdir = Path(tmp)
        for name in ("redis", "chatgate", "bare"):
            (workdir / name).mkdir()
        started: list[svc.Service] = []
        try:
            upstream = svc.start_upstream(workdir, LOAD_CORE)
            started.append(upstream)
            redis = svc.start_redis(workdir / "redis", GATEWAY_CORE)
            started.append(redis)
            subjects = [
                Subject("chatgate", svc.start_chatgate(workdir / "chatgate", upstream, redis,
                                                       GATEWAY_CORE, jwt_secret=secret)),
                Subject("bare-proxy", svc.start_bare(workdir / "bare", upstream, GATEWAY_CORE))]
            started += [s.service for s in subjects]
            for number in range(1, args.rounds + 1):
                for length, profile in LENGTHS.items():
                    svc.set_profile(upstream, **profile)
                    measure(subjects, length, secret, args)
                    print(f"round {number}, {length}: " + ", ".join(
                        f"{s.name} {s.cpu_ms[length][-1]:.3f} ms/turn" for s in subjects),
                        flush=True)
        finally:
            for service in reversed(started):
                service.stop()
    chatgate, floor = subjects
    print(f"\n## Per turn and per delta ({args.protocol}, {args.concurrency} streams each, "
          f"both gateways at once on core {GATEWAY_CORE}, {args.rounds} rounds)\n")
    short_n, long_n = (LENGTHS[k]["tokens"] for k in LENGTHS)
    print(f"| gateway | CPU ms/turn, {short_n} deltas | CPU ms/turn, {long_n} deltas | "
          f"frames/turn ({short_n} / {long_n}) | per delta µs | per turn, without its "
          f"deltas, ms |")
    print("|---|---|---|---|---|---|")
    for s in subjects:
        print(f"| {s.name} | {statistics.median(s.cpu_ms['short']):.3f} | "
              f"{statistics.median(s.cpu_ms['long']):.3f} | "
              f"{statistics.median(s.frames['short']):.1f} / "
              f"{statistics.median(s.frames['long']):.1f} | {s.per_delta_us():.1f} | "
              f"{s.per_turn_ms():.3f} |")
    gap_turn = chatgate.per_turn_ms() - floor.per_turn_ms()
    gap_deltas = short_n * (chatgate.per_delta_us() - floor.per_delta_us()) / 1000
    print(f"\nOf chatgate's extra CPU on a {short_n}-delta turn, {gap_turn:.3f} ms is per turn "
          f"and {gap_deltas:.3f} ms in its deltas.\nRerun: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
