"""Load generator: chat turns over chatgate's WebSocket protocol or OpenAI HTTP streaming.

Two shapes of load:
- fixed concurrency (closed loop): N clients, each runs turns back to back;
- fixed arrival rate (open loop): a turn starts every 1/R seconds whether or not earlier
  ones finished (WebSocket turns are spread over a pool of sockets, several per socket).

Each prompt carries a unique prefix (run id, client, sequence) so no cache can answer it,
unless the caller passes a fixed prompt on purpose (the cache-hit scenario).

Each turn (``bench/turns.py``) measures, on the client's monotonic clock:
- TTFT: from sending the request (HTTP POST / WS chat frame) to the first non-empty
  content delta;
- full-turn latency: from sending to the end of the stream (``[DONE]`` / ``done`` frame);
- errors: anything else (HTTP status, ``error`` frame, early close, time-out).

It is a library for ``bench/run.py`` and a command of its own:

    python bench/load.py --url ws://127.0.0.1:8080/v1/ws --token JWT --concurrency 50 \
        --duration 10
    python bench/load.py --url http://127.0.0.1:9000/v1/chat/completions --rate 100 \
        --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from turns import (
    TURN_TIMEOUT_S,
    Prompts,
    Protocol,
    Target,
    TurnResult,
    WsClient,
    http_session,
    http_turn,
)

PER_SOCKET = 8  # turns in flight per WebSocket in the open-loop mode (chatgate allows 16)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class RunStats:
    """What one load run measured, over its measurement window."""

    target: str
    mode: str
    turns: int
    errors: int
    window_s: float
    ttft_ms: list[float]
    latency_ms: list[float]
    error_samples: list[str]
    cached: int = 0
    client_cpu_s: float = 0.0
    all_turns: int = 0  # every completed turn of the run, warm-up included (CPU per turn)
    deltas_per_turn: float = 0.0  # content deltas (frames or SSE chunks) per completed turn

    @property
    def turns_per_s(self) -> float:
        return self.turns / self.window_s if self.window_s > 0 else math.nan

    def ttft(self, q: float) -> float:
        return percentile(self.ttft_ms, q)

    def latency(self, q: float) -> float:
        return percentile(self.latency_ms, q)

    def summary(self) -> dict[str, object]:
        return {"target": self.target, "mode": self.mode, "turns": self.turns,
                "errors": self.errors, "window_s": round(self.window_s, 2),
                "turns_per_s": round(self.turns_per_s, 2),
                "ttft_ms": {q: round(self.ttft(q), 3) for q in (50, 90, 99)},
                "latency_ms": {q: round(self.latency(q), 3) for q in (50, 90, 99)},
                "cached": self.cached, "client_cpu_s": round(self.client_cpu_s, 2),
                "all_turns": self.all_turns,
                "deltas_per_turn": round(self.deltas_per_turn, 2),
                "error_samples": self.error_samples[:5]}


def collect(target: str, mode: str, results: Sequence[TurnResult], start: float,
            end: float, client_cpu_s: float = 0.0) -> RunStats:
    """Turns that started in [start, end): latencies; throughput: completions in window."""
    measured = [r for r in results if start <= r.started < end]
    ok = [r for r in measured if r.ok]
    completed_in_window = sum(1 for r in results if r.ok and start <= r.ended <= end)
    errors = [r for r in measured if not r.ok]
    return RunStats(
        target=target, mode=mode, turns=completed_in_window, errors=len(errors),
        window_s=end - start,
        ttft_ms=[r.ttft * 1000 for r in ok if r.ttft is not None],
        latency_ms=[r.latency * 1000 for r in ok],
        error_samples=sorted({str(r.error) for r in errors})[:5],
        cached=sum(1 for r in ok if r.cached), client_cpu_s=client_cpu_s,
        all_turns=sum(1 for r in results if r.ok),
        deltas_per_turn=sum(r.deltas for r in ok) / len(ok) if ok else 0.0)




# --- the two shapes of load --------------------------------------------------------------


def _client_cpu() -> float:
    times = os.times()
    return times.user + times.system


class _Worker:
    """One closed-loop client: its own socket (WS) and its conversation (if continuing)."""

    def __init__(self, index: int, target: Target, session: aiohttp.ClientSession,
                 prompts: Prompts, turns_per_conversation: int) -> None:
        self.index = index
        self.target = target
        self.session = session
        self.prompts = prompts
        self.turns_per_conversation = turns_per_conversation
        self.ws: WsClient | None = None
        self.conversation_id: str | None = None
        self.turns_in_conversation = 0

    async def open(self) -> None:
        if self.target.protocol == "ws":
            self.ws = await WsClient.connect(self.session, self.target, self.index)

    async def turn(self) -> TurnResult:
        prompt = self.prompts.next(self.index)
        conversation = (self.conversation_id
                        if self.turns_in_conversation < self.turns_per_conversation else None)
        if conversation is None:
            self.turns_in_conversation = 0
        if self.target.protocol == "ws":
            if self.ws is None or self.ws.closed:
                self.ws = await WsClient.connect(self.session, self.target, self.index)
            result = await self.ws.turn(prompt, conversation_id=conversation,
                                        max_tokens=self.target.max_tokens)
        else:
            result = await http_turn(self.session, self.target, self.index, prompt,
                                     conversation_id=conversation)
        if result.ok and self.turns_per_conversation > 1:
            self.conversation_id = result.conversation_id
            self.turns_in_conversation += 1
        return result

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def run_concurrency(target: Target, *, concurrency: int, duration_s: float,
                          warmup_s: float = 1.0, prompts: Prompts | None = None,
                          turns_per_conversation: int = 1, max_turns: int | None = None,
                          min_window_turns: int = 0, max_extra_s: float = 0.0,
                          drain_s: float = TURN_TIMEOUT_S) -> RunStats:
    """Closed loop: ``concurrency`` clients run turns back to back for the duration (or,
    with ``max_turns``, until that many turns in all; then the window is the whole run).

    A slow subject may finish no turn in a short window: with ``min_window_turns`` the
    window grows (by at most ``max_extra_s``) until that many turns completed in it. Turns
    still in flight ``drain_s`` after the end are abandoned."""
    prompts = prompts or Prompts()
    results: list[TurnResult] = []
    budget = itertools.count() if max_turns is not None else None
    async with http_session() as session:
        workers = [_Worker(i, target, session, prompts, turns_per_conversation)
                   for i in range(concurrency)]
        opened = await asyncio.gather(*(w.open() for w in workers), return_exceptions=True)
        failed = [e for e in opened if isinstance(e, BaseException)]
        if len(failed) == len(workers):
            raise ConnectionError(f"{target.name}: no connection: {failed[0]!r}")
        loop_start = time.perf_counter()
        if max_turns is None:
            warm_end = loop_start + warmup_s
            end = [warm_end + duration_s]
        else:  # a count of turns; the duration only bounds the run
            warm_end, end = loop_start, [loop_start + duration_s]

        async def drive(worker: _Worker) -> None:
            if max_turns is None and warmup_s > 0:  # spread the starts over the warm-up, so
                # completions do not come in waves (a short window would count one wave)
                await asyncio.sleep(warmup_s * worker.index / concurrency)
            while time.perf_counter() < end[0]:
                if budget is not None and next(budget) >= (max_turns or 0):
                    return
                try:
                    results.append(await worker.turn())
                except (aiohttp.ClientError, ConnectionError, OSError) as exc:
                    now = time.perf_counter()
                    results.append(TurnResult(now, now, False, error=type(exc).__name__))
                    await asyncio.sleep(0.05)

        async def stretch() -> None:
            """Move the end out until the window holds ``min_window_turns`` completions."""
            limit = end[0] + max_extra_s
            while True:
                await asyncio.sleep(max(0.0, end[0] - time.perf_counter()))
                done = sum(1 for r in results if r.ok and r.ended >= warm_end)
                now = time.perf_counter()
                if done >= min_window_turns or now >= limit:
                    end[0] = now
                    return
                end[0] = min(limit, now + 0.25)

        cpu0 = _client_cpu()
        drivers = [asyncio.create_task(drive(w)) for w in workers]
        if min_window_turns and max_turns is None:
            await stretch()
        else:  # a count of turns ends early when every driver is done
            await asyncio.wait(drivers, timeout=max(0.0, end[0] - time.perf_counter()))
        # Turns in flight at the end may finish (so CPU per turn stays fair), for a while;
        # then they are abandoned (a slow subject would otherwise hold the run).
        _, pending = await asyncio.wait(drivers, timeout=max(0.0, end[0] + drain_s
                                                             - time.perf_counter()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
        cpu = _client_cpu() - cpu0
        finished = time.perf_counter()
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
    window_end = finished if max_turns is not None else end[0]
    stats = collect(target.name, f"concurrency {concurrency}", results, warm_end, window_end,
                    client_cpu_s=cpu)
    if failed:
        stats.errors += len(failed)
        stats.error_samples.insert(0, f"{len(failed)} connections failed: {failed[0]!r}")
    return stats


async def run_rate(target: Target, *, rate: float, duration_s: float, warmup_s: float = 1.0,
                   prompts: Prompts | None = None, max_in_flight: int = 5000) -> RunStats:
    """Open loop: one turn every 1/``rate`` s for the duration, however long turns take.
    Arrivals that would exceed ``max_in_flight`` are counted as errors (``overload``)."""
    prompts = prompts or Prompts()
    results: list[TurnResult] = []
    tasks: set[asyncio.Task[None]] = set()
    async with http_session() as session:
        pool: list[WsClient] = []

        async def socket() -> WsClient:
            for client in pool:
                if not client.closed and len(client.pending) < PER_SOCKET:
                    return client
            client = await WsClient.connect(session, target, len(pool))
            pool.append(client)
            return client

        async def one(index: int) -> None:
            try:
                if target.protocol == "ws":
                    client = await socket()
                    result = await client.turn(prompts.next(index),
                                               max_tokens=target.max_tokens)
                else:
                    result = await http_turn(session, target, index, prompts.next(index))
            except (aiohttp.ClientError, ConnectionError, OSError) as exc:
                now = time.perf_counter()
                result = TurnResult(now, now, False, error=type(exc).__name__)
            results.append(result)

        start = time.perf_counter()
        total = int((warmup_s + duration_s) * rate)
        cpu0 = _client_cpu()
        for i in range(total):
            wait = start + i / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            now = time.perf_counter()
            if len(tasks) >= max_in_flight:
                results.append(TurnResult(now, now, False, error="overload"))
                continue
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        end = start + warmup_s + duration_s
        if tasks:
            await asyncio.wait(set(tasks), timeout=TURN_TIMEOUT_S)
        cpu = _client_cpu() - cpu0
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*(c.close() for c in pool), return_exceptions=True)
    return collect(target.name, f"rate {rate:g}/s", results, start + warmup_s, end,
                   client_cpu_s=cpu)


async def open_idle(target: Target, count: int, *, batch: int = 200,
                    session: aiohttp.ClientSession) -> tuple[list[WsClient], int]:
    """Open ``count`` WebSockets that send nothing (their readers answer pings)."""
    clients: list[WsClient] = []
    failures = 0
    for first in range(0, count, batch):
        opened = await asyncio.gather(
            *(WsClient.connect(session, target, i)
              for i in range(first, min(count, first + batch))), return_exceptions=True)
        for item in opened:
            if isinstance(item, WsClient):
                clients.append(item)
            else:
                failures += 1
    return clients, failures


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; returns the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def event_loop_name() -> str:
    """``uvloop`` when it is installed (set ``BENCH_UVLOOP=0`` to refuse it), else asyncio."""
    if os.environ.get("BENCH_UVLOOP", "1") != "0":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
        return "uvloop"
    return "asyncio"


def run(coro):
    """Run ``coro`` on uvloop when available (the client must be cheap), else asyncio."""
    if event_loop_name() == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def _target(spec: dict[str, Any]) -> Target:
    return Target(name=str(spec["name"]), protocol=spec["protocol"],
                  url=str(spec["url"]), model=str(spec.get("model", "bench-model")),
                  headers=dict(spec.get("headers") or {}),
                  tokens=tuple(spec.get("tokens") or ()),
                  max_tokens=int(spec.get("max_tokens", 512)))


async def run_segment(segment: dict[str, Any]) -> dict[str, Any]:
    """One segment of a spec: ``mode`` concurrency | count | rate, or idle (see main)."""
    target = _target(segment["target"])
    prompts = Prompts(segment.get("prompt"))
    mode = segment["mode"]
    if mode == "rate":
        stats = await run_rate(target, rate=float(segment["rate"]),
                               duration_s=float(segment["duration_s"]),
                               warmup_s=float(segment.get("warmup_s", 1.0)),
                               prompts=prompts)
    else:
        count = segment.get("turns") if mode == "count" else None
        stats = await run_concurrency(
            target, concurrency=int(segment.get("concurrency", 1)),
            duration_s=float(segment.get("duration_s", 120.0)),
            warmup_s=float(segment.get("warmup_s", 1.0)),
            prompts=prompts, max_turns=int(count) if count is not None else None,
            turns_per_conversation=int(segment.get("turns_per_conversation", 1)),
            min_window_turns=int(segment.get("min_window_turns", 0)),
            max_extra_s=float(segment.get("max_extra_s", 0.0)),
            drain_s=float(segment.get("drain_s", TURN_TIMEOUT_S)))
    return {**stats.summary(), "tag": segment.get("tag"), "ttft_samples": stats.ttft_ms,
            "latency_samples": stats.latency_ms}


async def run_idle(segment: dict[str, Any]) -> None:
    """Open ``count`` idle sockets, print ``{"ready": n}``, hold them until a line arrives
    on stdin (or ``hold_s`` passes), then close them."""
    target = _target(segment["target"])
    async with http_session() as session:
        clients, failures = await open_idle(target, int(segment["count"]),
                                            session=session)
        print(json.dumps({"ready": len(clients), "failures": failures}), flush=True)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop.run_in_executor(None, input),
                                   timeout=float(segment.get("hold_s", 600)))
        alive = sum(1 for c in clients if not c.closed)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        print(json.dumps({"closed": len(clients), "alive_at_close": alive}), flush=True)


async def run_spec(spec: dict[str, Any]) -> None:
    """Run a spec's segments in order; one JSON line per segment on stdout."""
    for segment in spec["segments"]:
        if segment["mode"] == "idle":
            await run_idle(segment)
            continue
        try:
            out = await run_segment(segment)
        except (ConnectionError, OSError, aiohttp.ClientError) as exc:
            out = {"tag": segment.get("tag"), "failed": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", help="a JSON spec of segments ('-' for stdin), as bench/run.py "
                                       "writes them; the other options are then ignored")
    parser.add_argument("--url", help="ws://HOST:PORT/v1/ws or http://HOST:PORT/v1/chat/completions")
    parser.add_argument("--token", action="append", default=[],
                        help="bearer token (repeat for one per client)")
    parser.add_argument("--header", action="append", default=[], help="NAME:VALUE")
    parser.add_argument("--model", default="bench-model")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--concurrency", type=int, default=1)
    shape.add_argument("--rate", type=float, help="turns per second (open loop)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--turns-per-conversation", type=int, default=1)
    parser.add_argument("--prompt", help="a fixed prompt (default: unique per turn)")
    args = parser.parse_args()
    raise_fd_limit()
    if args.spec:
        # one line: stdin stays open for the idle mode's "close" line
        text = sys.stdin.readline() if args.spec == "-" else Path(args.spec).read_text()
        run(run_spec(json.loads(text)))
        return
    if not args.url:
        parser.error("--url or --spec is required")
    protocol: Protocol = "ws" if args.url.startswith("ws") else "http"
    headers = dict(h.split(":", 1) for h in args.header)
    target = Target(name=args.url, protocol=protocol, url=args.url, model=args.model,
                    headers={k.strip(): v.strip() for k, v in headers.items()},
                    tokens=tuple(args.token))
    prompts = Prompts(args.prompt)
    if args.rate:
        stats = run(run_rate(target, rate=args.rate, duration_s=args.duration,
                             warmup_s=args.warmup, prompts=prompts))
    else:
        stats = run(run_concurrency(
            target, concurrency=args.concurrency, duration_s=args.duration,
            warmup_s=args.warmup, prompts=prompts,
            turns_per_conversation=args.turns_per_conversation))
    print(json.dumps({**stats.summary(), "event_loop": event_loop_name()}, indent=2))


if __name__ == "__main__":
    main()
