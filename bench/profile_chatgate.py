"""Profile chatgate's turn path under load with py-spy, and say where its CPU goes.

    .venv/bin/pip install py-spy                       # once (into the venv only)
    .venv/bin/python bench/profile_chatgate.py [--protocol ws|http] [--concurrency 50]
        [--profile chat20|chat|instant] [--seconds 10] [--log-level INFO]

Starts the mock upstream, a redis-server and chatgate exactly as bench/run.py does (same
cores), runs the load generator against it, records chatgate with ``py-spy record`` and
prints: CPU per turn, the busy samples by area (gateway, providers, memory, budgets,
openai SDK, httpx, pydantic, redis-py, aiohttp, asyncio, logging, tiktoken...), the hottest
functions (inclusive) and lines (self). The raw collapsed stacks go to
bench/results/<stamp>-profile-<protocol>.txt (feed them to any flame-graph tool).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procstat
import services as svc
from load import raise_fd_limit
from run import GATEWAY_CORE, LOAD_CORE, PROFILES

IDLE_FRAMES = ("select (selectors.py", "_worker (concurrent/futures/thread.py:81)",
               "wait (threading.py", "_wait_for_tstate_lock")
AREAS = [  # first match wins: (area, substring of the frame's file)
    ("chatgate: gateway/", "gateway/"), ("chatgate: providers/", "providers/"),
    ("chatgate: memory/", "memory/"), ("chatgate: budgets/", "budgets/"),
    ("openai SDK", "openai/"), ("httpx2/httpcore2/h11/anyio", "httpx"),
    ("httpx2/httpcore2/h11/anyio", "httpcore"), ("httpx2/httpcore2/h11/anyio", "h11/"),
    ("httpx2/httpcore2/h11/anyio", "anyio/"), ("pydantic", "pydantic"),
    ("redis-py", "redis/"), ("aiohttp", "aiohttp/"), ("logging/structlog", "structlog/"),
    ("logging/structlog", "logging/"), ("tiktoken", "tiktoken"), ("sqlite", "sqlite"),
    ("prometheus_client", "prometheus_client/"), ("jwt", "jwt/"), ("orjson/json", "json/"),
    ("typing/inspect", "typing"), ("typing/inspect", "inspect.py"),
    ("asyncio", "asyncio/"),
]


def _frame_file(frame: str) -> str:
    match = re.search(r"\(([^()]*):\d+\)$", frame)
    return match.group(1) if match else frame


def area_of(frames: list[str]) -> str:
    """The innermost frame's area, skipping the standard library's plumbing when a
    library frame sits above it (so time in asyncio under openai counts as openai)."""
    for frame in reversed(frames):
        path = _frame_file(frame)
        for area, needle in AREAS:
            if needle in path and area not in ("asyncio", "typing/inspect"):
                return area
    for frame in reversed(frames):
        path = _frame_file(frame)
        for area, needle in AREAS:
            if needle in path:
                return area
    return "other"


def summarize(raw: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    busy = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        if any(f in frames[-1] for f in IDLE_FRAMES):
            idle += n
            continue
        busy += n
        own[frames[-1]] += n
        areas[area_of(frames)] += n
        for function in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            inclusive[function] += n
    if not busy:
        return "no busy samples"
    pct = lambda n: f"{100 * n / busy:5.1f} %"  # noqa: E731
    out = [f"busy samples: {busy} (idle samples left out: {idle})", "",
           "by area (innermost library frame):"]
    out += [f"  {pct(n)}  {area}" for area, n in areas.most_common()]
    out += ["", "hottest functions (inclusive):"]
    skip = ("<module>", "main (gateway/cli.py)", "_serve (", "run_app (", "run_forever (",
            "run_until_complete (", "_run_once (", "Handle._run (", "_bootstrap")
    shown = [(f, n) for f, n in inclusive.most_common() if not any(s in f for s in skip)]
    out += [f"  {pct(n)}  {f}" for f, n in shown[:top]]
    out += ["", "hottest lines (self):"]
    out += [f"  {pct(n)}  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", choices=("ws", "http"), default="ws")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="chat20")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    raise_fd_limit()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = svc.BENCH / "results" / f"{stamp}-profile-{args.protocol}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chatgate-profile-") as tmp:
        workdir = Path(tmp)
        started: list[svc.Service] = []
        try:
            upstream = svc.start_upstream(workdir, LOAD_CORE)
            started.append(upstream)
            redis = svc.start_redis(workdir, GATEWAY_CORE)
            started.append(redis)
            secret = svc.new_secret()
            chatgate = svc.start_chatgate(workdir, upstream, redis, GATEWAY_CORE,
                                          jwt_secret=secret, log_level=args.log_level)
            started.append(chatgate)
            svc.set_profile(upstream, **PROFILES[args.profile])
            tokens = [svc.mint_token(secret, f"u{i}") for i in range(args.concurrency)]
            url = (f"ws://127.0.0.1:{chatgate.port}/v1/ws" if args.protocol == "ws" else
                   f"http://127.0.0.1:{chatgate.port}/v1/chat/completions")
            target = {"name": "chatgate", "protocol": args.protocol, "url": url,
                      "tokens": tokens}
            segment = {"target": target, "mode": "concurrency", "tag": "profile",
                       "concurrency": args.concurrency, "warmup_s": 2.0,
                       "duration_s": args.seconds + 1.0}
            load = subprocess.Popen(
                svc.pinned([svc.tool_python(), str(svc.BENCH / "load.py"), "--spec", "-"],
                           LOAD_CORE), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True)
            assert load.stdin is not None
            load.stdin.write(json.dumps({"segments": [segment]}) + "\n")
            load.stdin.flush()
            time.sleep(2.5)
            cpu0 = procstat.cpu_seconds(chatgate.pid)
            subprocess.run([py_spy, "record", "-p", str(chatgate.pid), "-d",
                            str(int(args.seconds)), "-r", str(args.rate), "-f", "raw", "-o",
                            str(out)], capture_output=True, check=False)
            cpu = procstat.cpu_seconds(chatgate.pid) - cpu0
            stdout, _ = load.communicate(timeout=300)
            result = json.loads(stdout.strip().splitlines()[-1])
        finally:
            for service in reversed(started):
                service.stop()
    turns_per_s = float(result.get("turns_per_s") or 0)
    print(f"chatgate {args.protocol}, {args.concurrency} concurrent, upstream "
          f"{args.profile} {PROFILES[args.profile]}: {turns_per_s:.1f} turns/s, "
          f"{result.get('errors')} errors, TTFT p50/p99 {result['ttft_ms']['50']}/"
          f"{result['ttft_ms']['99']} ms")
    if turns_per_s:
        print(f"chatgate CPU while sampled: {cpu:.2f} s over {args.seconds:.0f} s = "
              f"{100 * cpu / args.seconds:.0f} % of a core, about "
              f"{1000 * cpu / (turns_per_s * args.seconds):.2f} ms per turn "
              f"(py-spy's sampling adds a little)")
    print()
    print(summarize(out))
    print(f"\nraw stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
