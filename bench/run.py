"""chatgate's benchmarks, side by side with a bare proxy, LiteLLM and Portkey.

    .venv/bin/python bench/run.py --setup     # once: install the references (bench/.peers)
    .venv/bin/python bench/run.py --quick     # about 3 minutes
    .venv/bin/python bench/run.py             # the full run (10 000 idle sockets, 10 min soak)

Starts a mock OpenAI upstream, a redis-server, chatgate (real Redis: budgets, memory and
cache on), a bare aiohttp proxy (HTTP and WebSocket) and the references, all pointed at
the same upstream; drives them with bench/load.py; writes one Markdown report to
bench/results/<timestamp>.md and prints it. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import functools
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procstat
import report
import services as svc
from driver import Driver
from load import percentile, raise_fd_limit
from services import Service, StartError

GATEWAY_CORE, LOAD_CORE = 1, 0
CACHE_PROMPT = "What is the capital of France?"


@dataclass(frozen=True)
class Plan:
    name: str
    overhead_blocks: int  # interleaved direct / target blocks at concurrency 1
    overhead_block_turns: int
    load_concurrency: int
    load_warmup_s: float
    load_s: float
    sweep_levels: tuple[int, ...]
    sweep_warmup_s: float
    sweep_s: float
    sweep_all_subjects: bool  # False: only chatgate-ws and its floor
    sweep_min_turns: int  # a level's window grows (by max_extra_s at most) to this many turns
    idle_connections: int
    soak_s: float
    soak_rate: float
    cache_turns: int
    litellm_workers: tuple[int, ...]  # LiteLLM with 1 and 2 workers (2 takes ~80 s to start)
    max_extra_s: float  # a load window grows by at most this until it holds enough turns:
    min_window_share: float  # ... this share of the concurrency
    drain_s: float  # turns still in flight this long after a load window are abandoned


QUICK = Plan("quick", overhead_blocks=3, overhead_block_turns=40, load_concurrency=200,
             load_warmup_s=1.0, load_s=2.5, sweep_levels=(50, 200), sweep_warmup_s=1.5,
             sweep_s=2.0, sweep_all_subjects=False, sweep_min_turns=100, idle_connections=1000,
             soak_s=30, soak_rate=15, cache_turns=100, litellm_workers=(1,), max_extra_s=15.0,
             min_window_share=0.5, drain_s=4.0)
FULL = Plan("full", overhead_blocks=10, overhead_block_turns=100, load_concurrency=200,
            load_warmup_s=2.0, load_s=15.0, sweep_levels=(10, 50, 100, 200, 300),
            sweep_warmup_s=2.0, sweep_s=8.0, sweep_all_subjects=True, sweep_min_turns=100,
            idle_connections=10_000, soak_s=600, soak_rate=15, cache_turns=500,
            litellm_workers=(1, 2), max_extra_s=60.0, min_window_share=1.0, drain_s=30.0)

PROFILES = {"instant": {"tokens": 16, "ttft_ms": 0, "delay_ms": 0},
            "chat": {"tokens": 64, "ttft_ms": 0, "delay_ms": 20},
            "chat20": {"tokens": 20, "ttft_ms": 0, "delay_ms": 20}}


@dataclass
class Subject:
    """One row: a load target and the gateway process behind it (None: direct)."""

    name: str
    label: str
    target: dict[str, Any]
    service: Service | None
    floor: str | None = None  # the bare proxy row of the same protocol
    turns_per_conversation: int = 1
    watch_extra: list[Service] = field(default_factory=list)  # redis for chatgate
    results: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    plan: Plan
    workdir: Path
    driver: Driver
    upstream: Service
    direct: Subject
    subjects: list[Subject]
    unavailable: dict[str, str]
    services: list[Service]
    chatgate: Service | None = None
    redis: Service | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def subject(self, name: str) -> Subject | None:
        return next((s for s in self.subjects if s.name == name), None)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- start-up ---------------------------------------------------------------------------


def start_all(plan: Plan, workdir: Path, *, peers: bool, log_level: str) -> Bench:
    gateway_core = GATEWAY_CORE if (os.cpu_count() or 1) > 1 else None
    load_core = LOAD_CORE if (os.cpu_count() or 1) > 1 else None
    upstream = svc.start_upstream(workdir, load_core)
    services = [upstream]
    unavailable: dict[str, str] = {}
    up = upstream.port
    direct = Subject("direct", "direct to the upstream (no gateway)",
                     {"name": "direct", "protocol": "http",
                      "url": f"http://127.0.0.1:{up}/v1/chat/completions"}, None)
    subjects: list[Subject] = []
    starters: dict[str, Callable[[], Service]] = {
        "bare": lambda: svc.start_bare(workdir, upstream, gateway_core)}
    if peers:
        for workers in (1, 2):
            if workers in plan.litellm_workers:
                starters[f"litellm-{workers}w"] = functools.partial(
                    svc.start_litellm, workdir, upstream, gateway_core, workers=workers)
            else:
                unavailable[f"litellm-{workers}w"] = "full run only (its start-up alone " \
                                                      "takes about 80 s here)"
        starters["portkey"] = lambda: svc.start_portkey(workdir, gateway_core)
    bench_secret = svc.new_secret()
    redis: Service | None = None
    chatgate: Service | None = None
    try:
        redis = svc.start_redis(workdir, gateway_core)
        services.append(redis)
        starters["chatgate"] = lambda: svc.start_chatgate(
            workdir, upstream, redis, gateway_core, jwt_secret=bench_secret,  # type: ignore[arg-type]
            log_level=log_level)
    except StartError as exc:
        unavailable["chatgate"] = f"redis-server: {exc}"
    started: dict[str, Service] = {}
    with concurrent.futures.ThreadPoolExecutor(len(starters)) as pool:
        futures = {name: pool.submit(start) for name, start in starters.items()}
        for name, future in futures.items():
            try:
                started[name] = future.result()
                services.append(started[name])
                log(f"{name} up on 127.0.0.1:{started[name].port}")
            except StartError as exc:
                unavailable[name] = str(exc)
                log(f"{name} unavailable: {exc}")
    if "bare" in started:
        bare = started["bare"]
        subjects += [
            Subject("bare-http", "bare aiohttp proxy, HTTP SSE (floor)",
                    {"name": "bare-http", "protocol": "http",
                     "url": f"http://127.0.0.1:{bare.port}/v1/chat/completions"}, bare),
            Subject("bare-ws", "bare aiohttp proxy, WebSocket frames (floor)",
                    {"name": "bare-ws", "protocol": "ws",
                     "url": f"ws://127.0.0.1:{bare.port}/v1/ws"}, bare)]
    if "chatgate" in started:
        chatgate = started["chatgate"]
        tokens = [svc.mint_token(bench_secret, f"u{i}") for i in range(500)]
        ws_url = f"ws://127.0.0.1:{chatgate.port}/v1/ws"
        extra = [redis] if redis else []
        subjects += [
            Subject("chatgate-http", "chatgate, HTTP SSE (budgets + memory + cache on)",
                    {"name": "chatgate-http", "protocol": "http", "tokens": tokens,
                     "url": f"http://127.0.0.1:{chatgate.port}/v1/chat/completions"},
                    chatgate, floor="bare-http", watch_extra=extra),
            Subject("chatgate-ws", "chatgate, WebSocket (budgets + memory + cache on)",
                    {"name": "chatgate-ws", "protocol": "ws", "url": ws_url,
                     "tokens": tokens}, chatgate, floor="bare-ws", watch_extra=extra),
            Subject("chatgate-ws-conv", "chatgate, WebSocket, 8-turn conversations "
                    "(memory read + write)", {"name": "chatgate-ws-conv", "protocol": "ws",
                                              "url": ws_url, "tokens": tokens},
                    chatgate, floor="bare-ws", turns_per_conversation=8, watch_extra=extra)]
    for workers in (1, 2):
        name = f"litellm-{workers}w"
        if name in started:
            lite = started[name]
            subjects.append(Subject(
                name, f"LiteLLM proxy, {workers} worker{'s' if workers > 1 else ''}",
                {"name": name, "protocol": "http",
                 "url": f"http://127.0.0.1:{lite.port}/v1/chat/completions",
                 "headers": {"Authorization": f"Bearer {lite.info['master_key']}"}},
                lite, floor="bare-http"))
    if "portkey" in started:
        port = started["portkey"]
        subjects.append(Subject(
            "portkey", "Portkey gateway (Node)",
            {"name": "portkey", "protocol": "http",
             "url": f"http://127.0.0.1:{port.port}/v1/chat/completions",
             "headers": {"x-portkey-provider": "openai", "Authorization": "Bearer bench",
                         "x-portkey-custom-host": f"http://127.0.0.1:{up}/v1"}},
            port, floor="bare-http"))
    if not peers:
        for name in ("litellm-1w", "litellm-2w", "portkey"):
            unavailable[name] = "skipped (--no-peers)"
    return Bench(plan=plan, workdir=workdir, driver=Driver(load_core=load_core),
                 upstream=upstream, direct=direct, subjects=subjects,
                 unavailable=unavailable, services=services, chatgate=chatgate, redis=redis,
                 meta={"gateway_core": gateway_core, "load_core": load_core})


# --- phases -----------------------------------------------------------------------------


def _segment(subject: Subject, tag: str, **params: Any) -> dict[str, Any]:
    segment = {"target": subject.target, "tag": tag, **params}
    if subject.turns_per_conversation > 1 and params.get("mode") != "rate":
        segment["turns_per_conversation"] = subject.turns_per_conversation
    return segment


def _merge(segments: list[dict[str, Any]]) -> dict[str, Any]:
    ttft = [x for s in segments for x in s.get("ttft_samples", [])]
    latency = [x for s in segments for x in s.get("latency_samples", [])]
    return {"turns": sum(s.get("turns", 0) for s in segments),
            "errors": sum(s.get("errors", 0) for s in segments),
            "cached": sum(s.get("cached", 0) for s in segments),
            "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99),
            "latency_p50": percentile(latency, 50), "latency_p99": percentile(latency, 99),
            "error_samples": [e for s in segments for e in s.get("error_samples", [])][:3],
            "failed": next((s["failed"] for s in segments if "failed" in s), None)}


def phase_overhead(bench: Bench) -> None:
    """Added TTFT at concurrency 1, instant upstream: blocks of direct and target turns
    alternate in one load process, so both see the same machine at the same time."""
    svc.set_profile(bench.upstream, **PROFILES["instant"])
    plan = bench.plan
    for subject in bench.subjects:
        log(f"overhead: {subject.name}")
        segments = [_segment(subject, "warm", mode="count", turns=20, concurrency=1)]
        for _ in range(plan.overhead_blocks):
            segments.append(_segment(bench.direct, "direct", mode="count",
                                     turns=plan.overhead_block_turns))
            segments.append(_segment(subject, "target", mode="count",
                                     turns=plan.overhead_block_turns))
        measured = bench.driver.run(segments)
        target, direct = _merge(measured.by_tag("target")), _merge(measured.by_tag("direct"))
        subject.results["overhead"] = {
            **target, "direct_ttft_p50": direct["ttft_p50"],
            "direct_ttft_p99": direct["ttft_p99"],
            "added_ttft_p50": target["ttft_p50"] - direct["ttft_p50"],
            "added_ttft_p99": target["ttft_p99"] - direct["ttft_p99"],
            "added_latency_p50": target["latency_p50"] - direct["latency_p50"]}
        bench.direct.results.setdefault("overhead_runs", []).append(direct)


def _load_run(bench: Bench, subject: Subject, *, concurrency: int, warmup_s: float,
              duration_s: float, tag: str, min_turns: int = 0) -> dict[str, Any]:
    plan = bench.plan
    watch = [bench.upstream, *([subject.service] if subject.service else []),
             *subject.watch_extra]
    measured = bench.driver.run([_segment(
        subject, tag, mode="concurrency", concurrency=concurrency, warmup_s=warmup_s,
        duration_s=duration_s,
        min_window_turns=max(min_turns, int(concurrency * plan.min_window_share)),
        max_extra_s=plan.max_extra_s, drain_s=plan.drain_s)], watch=watch)
    segment = measured.segments[0] if measured.segments else {"failed": "no output"}
    merged = _merge([segment])
    all_turns = max(1, int(segment.get("all_turns", 0)))
    client_cpu = float(segment.get("client_cpu_s") or 0.0)
    result = {**merged, "turns_per_s": segment.get("turns_per_s", float("nan")),
              "all_turns": all_turns, "wall_s": measured.wall_s,
              "load_core_busy": (client_cpu + measured.cpu_s.get("upstream", 0.0))
              / max(measured.wall_s, 1e-9)}
    if subject.service is not None:
        cpu = measured.cpu_s.get(subject.service.name, 0.0)
        result["gateway_cpu_s"] = cpu
        result["gateway_cpu_ms_per_turn"] = 1000 * cpu / all_turns
        result["gateway_core_busy"] = cpu / max(measured.wall_s, 1e-9)
    for extra in subject.watch_extra:
        result[f"{extra.name}_cpu_ms_per_turn"] = 1000 * measured.cpu_s.get(extra.name, 0.0) \
            / all_turns
    return result


def phase_load(bench: Bench) -> None:
    """Turns/s, TTFT and gateway CPU at a fixed concurrency (200), chat20 profile."""
    svc.set_profile(bench.upstream, **PROFILES["chat20"])
    plan = bench.plan
    for subject in [bench.direct, *bench.subjects]:
        log(f"load x{plan.load_concurrency}: {subject.name}")
        subject.results["load"] = _load_run(bench, subject,
                                            concurrency=plan.load_concurrency,
                                            warmup_s=plan.load_warmup_s,
                                            duration_s=plan.load_s, tag="load")


def phase_sweep(bench: Bench) -> None:
    """Concurrency sweep (chat profile, 64 deltas x 20 ms): the highest concurrency where
    the p99 added TTFT (target p99 minus direct p99 at that level) stays under 10 ms.

    Each level's window holds at least ``sweep_min_turns`` turns (a p99 of a handful is
    its worst turn). A subject over the budget at a level is measured there once more,
    with the direct path again beside it: one stall on a shared machine does not end its
    sweep, two do. Both attempts are kept and reported. Concurrency 1 is the overhead
    phase's (alternating blocks, many more turns), not a sweep level."""
    svc.set_profile(bench.upstream, **PROFILES["chat"])
    plan = bench.plan
    chosen = [s for s in bench.subjects if plan.sweep_all_subjects or s.name in
              ("chatgate-ws", "bare-ws")]
    over: set[str] = set()  # subjects past their limit: higher levels are not run

    def measure(subject: Subject, level: int) -> dict[str, Any]:
        log(f"sweep x{level}: {subject.name}")
        return _load_run(bench, subject, concurrency=level, warmup_s=plan.sweep_warmup_s,
                         duration_s=plan.sweep_s, tag="sweep", min_turns=plan.sweep_min_turns)

    for level in plan.sweep_levels:
        if all(s.name in over for s in chosen):
            break
        direct = bench.direct.results.setdefault("sweep", {})[level] = measure(bench.direct,
                                                                               level)
        for subject in chosen:
            if subject.name in over:
                continue
            result = measure(subject, level)
            result["added_ttft_p99"] = result["ttft_p99"] - direct["ttft_p99"]
            if not report.sweep_passed(result):  # confirm: both paths measured again
                again_direct = measure(bench.direct, level)
                again = measure(subject, level)
                again["added_ttft_p99"] = again["ttft_p99"] - again_direct["ttft_p99"]
                again["direct_ttft_p99"] = again_direct["ttft_p99"]
                again["first_attempt"] = {k: result.get(k) for k in (
                    "added_ttft_p99", "ttft_p99", "turns_per_s", "errors", "failed")}
                result = again
            subject.results.setdefault("sweep", {})[level] = result
            if not report.sweep_passed(result):
                over.add(subject.name)
    for subject in bench.subjects:
        if subject not in chosen:
            subject.results["sweep_skipped"] = "full run only"


def phase_cache(bench: Bench) -> None:
    """Response-cache hits: the same first-turn prompt again and again (chatgate WS)."""
    subject = bench.subject("chatgate-ws")
    if subject is None:
        return
    svc.set_profile(bench.upstream, **PROFILES["instant"])
    log("cache hits: chatgate-ws")
    fixed = {"prompt": CACHE_PROMPT}
    segments = [_segment(subject, "prime", mode="count", turns=3, **fixed)]
    blocks = 4
    for _ in range(blocks):
        segments.append(_segment(bench.direct, "direct", mode="count",
                                 turns=bench.plan.cache_turns // blocks))
        segments.append(_segment(subject, "hits", mode="count",
                                 turns=bench.plan.cache_turns // blocks, **fixed))
    measured = bench.driver.run(segments)
    hits, direct = _merge(measured.by_tag("hits")), _merge(measured.by_tag("direct"))
    result = {**hits, "direct_ttft_p50": direct["ttft_p50"],
              "direct_ttft_p99": direct["ttft_p99"],
              "added_ttft_p50": hits["ttft_p50"] - direct["ttft_p50"],
              "added_ttft_p99": hits["ttft_p99"] - direct["ttft_p99"]}
    if hits["turns"] and hits["cached"] == 0:
        result["not_available"] = ("not available: repeated identical first turns came back "
                                   "with cached:false (the response cache is not wired "
                                   "into the turn path yet)")
    bench.extra["cache"] = result


def phase_idle(bench: Bench) -> None:
    """Memory per idle WebSocket: N sockets that only answer pings, RSS before/after."""
    n = bench.plan.idle_connections
    for name in ("bare-ws", "chatgate-ws"):
        subject = bench.subject(name)
        if subject is None or subject.service is None:
            continue
        log(f"idle sockets x{n}: {name}")
        segment = {"target": subject.target, "mode": "idle", "count": n, "hold_s": 300}
        try:
            bench.extra.setdefault("idle", {})[name] = bench.driver.idle(segment,
                                                                          subject.service)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            bench.extra.setdefault("idle", {})[name] = {"error": str(exc)}


def phase_soak(bench: Bench) -> None:
    """Memory growth of chatgate over a soak at a fixed arrival rate (chat profile)."""
    subject = bench.subject("chatgate-ws")
    if subject is None or subject.service is None:
        return
    plan = bench.plan
    svc.set_profile(bench.upstream, **PROFILES["chat"])
    log(f"soak {plan.soak_s:.0f}s at {plan.soak_rate:g} turns/s: chatgate-ws")
    measured = bench.driver.run([_segment(subject, "soak", mode="rate", rate=plan.soak_rate,
                                          warmup_s=2.0, duration_s=plan.soak_s)],
                                watch=[subject.service], sample=subject.service,
                                sample_every_s=max(1.0, plan.soak_s / 300))
    merged = _merge(measured.segments)
    bench.extra["soak"] = {**merged, **soak_growth(measured.rss_samples),
                           "duration_s": plan.soak_s, "rate": plan.soak_rate,
                           "turns_per_s": (measured.segments or [{}])[0].get("turns_per_s"),
                           "gateway_cpu_ms_per_turn": 1000 * measured.cpu_s.get(
                               subject.service.name, 0.0) / max(1, sum(
                                   s.get("all_turns", 0) for s in measured.segments))}


def soak_growth(samples: list[tuple[float, int]]) -> dict[str, Any]:
    """Growth after warm-up: mean RSS of the last tenth minus mean RSS at 20-30 % of the
    run, and the least-squares slope over everything after 20 %."""
    if len(samples) < 10:
        return {"samples": len(samples)}
    end_t = samples[-1][0]
    steady = [(t, r) for t, r in samples if t >= 0.2 * end_t]
    early = [r for t, r in steady if t <= 0.3 * end_t] or [steady[0][1]]
    late = [r for t, r in steady if t >= 0.9 * end_t] or [steady[-1][1]]
    n = len(steady)
    mean_t = sum(t for t, _ in steady) / n
    mean_r = sum(r for _, r in steady) / n
    var = sum((t - mean_t) ** 2 for t, _ in steady) or 1.0
    slope = sum((t - mean_t) * (r - mean_r) for t, r in steady) / var  # bytes per second
    return {"samples": len(samples), "rss_start": samples[0][1], "rss_end": samples[-1][1],
            "rss_peak": max(r for _, r in samples),
            "growth_bytes": sum(late) / len(late) - sum(early) / len(early),
            "slope_bytes_per_min": slope * 60}


# --- the whole run ----------------------------------------------------------------------


def machine_busy_s() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
    return busy / procstat.TICKS


def run(args: argparse.Namespace) -> Path:
    plan = QUICK if args.quick else FULL
    fd_limit = raise_fd_limit()  # inherited by every process we start
    started = time.monotonic()
    busy0 = machine_busy_s()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="chatgate-bench-") as tmp:
        workdir = Path(tmp)
        bench = start_all(plan, workdir, peers=not args.no_peers, log_level=args.log_level)
        try:
            ours0 = _our_cpu(bench)
            phases: list[Callable[[Bench], None]] = [phase_overhead, phase_load, phase_sweep,
                                                     phase_cache]
            for phase in phases:
                phase(bench)
            for subject in bench.subjects:  # before idle sockets and the soak
                if subject.service is not None:
                    subject.results["peak_rss"] = procstat.peak_rss_bytes(subject.service.pid)
            phase_idle(bench)
            phase_soak(bench)
            foreign = (machine_busy_s() - busy0) - (_our_cpu(bench) - ours0)
            bench.meta.update(
                elapsed_s=time.monotonic() - started, foreign_cpu_s=max(0.0, foreign),
                fd_limit=fd_limit, cores=os.cpu_count(), event_loop=_load_loop(),
                gateway_loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
                versions=svc.versions(), stamp=stamp, plan=plan.name,
                command=_command(), load_cpu_s=bench.driver.load_cpu_s)
            text = report.render(bench)
        finally:
            for service in reversed(bench.services):
                service.stop()
            if args.keep_logs:
                keep = Path(__file__).resolve().parent / "results" / f"{stamp}-logs"
                keep.mkdir(parents=True, exist_ok=True)
                for path in workdir.glob("*.log"):
                    (keep / path.name).write_bytes(path.read_bytes())
    out = Path(__file__).resolve().parent / "results" / f"{stamp}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(_raw(bench), indent=1, default=str))
    print(text)
    log(f"report: {out}")
    return out


def _raw(bench: Bench) -> dict[str, Any]:
    """Every figure behind the report (samples left out), for comparing runs."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): strip(v) for k, v in value.items() if not str(k).endswith("_samples")}
        return value
    return {"meta": bench.meta, "plan": dataclasses.asdict(bench.plan),
            "unavailable": bench.unavailable, "extra": strip(bench.extra),
            "subjects": [{"name": s.name, "label": s.label, "results": strip(s.results)}
                         for s in [bench.direct, *bench.subjects]]}


def _our_cpu(bench: Bench) -> float:
    """CPU of this process, its reaped children (load processes) and the live services."""
    live = sum(procstat.cpu_seconds(s.pid) for s in bench.services if s.alive())
    times = os.times()
    return live + times.user + times.system + times.children_user + times.children_system


def _load_loop() -> str:
    code = "import load; print(load.event_loop_name())"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run([svc.tool_python(), "-c", code], capture_output=True, text=True,
                              cwd=str(svc.BENCH), timeout=30).stdout.strip() or "?"
    return "?"


def _command() -> str:
    python = os.path.relpath(sys.executable, svc.ROOT) if sys.executable.startswith(
        str(svc.ROOT)) else sys.executable
    return " ".join([python, "bench/run.py", *map(shlex.quote, sys.argv[1:])])


def setup() -> int:
    return subprocess.call(["bash", str(svc.BENCH / "setup_peers.sh")])


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through run()'s finally: services stop


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup", action="store_true",
                        help="install the references under bench/.peers, then exit")
    parser.add_argument("--quick", action="store_true", help="the ~3 minute run")
    parser.add_argument("--no-peers", action="store_true",
                        help="skip LiteLLM and Portkey (chatgate, the floor and direct only)")
    parser.add_argument("--log-level", default="INFO",
                        help="chatgate's log level (default INFO: one line per turn, as in "
                             "production; logs go to a file)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="copy every service's log to bench/results/<stamp>-logs/")
    args = parser.parse_args()
    if args.setup:
        return setup()
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
