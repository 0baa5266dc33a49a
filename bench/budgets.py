"""Budget ledger benchmark: reserve+settle pairs per second, and an overspend check.

Run:  .venv/bin/python bench/budgets.py [--pairs 20000] [--tasks 64] [--rounds 3]

Starts its own redis-server on a free port (tests/redis_server.py) and measures, in one
process and one run, on the event loop and garbage-collector settings ``chatgate serve``
runs with (uvloop where installed):
1. the floor: a bare EVALSHA of a trivial script (``return 1``) with the same tasks,
   one round trip per call and auto-pipelined (memory.pipelining.AutoPipeline as the
   gateway's runtime makes it: its own client, a kept connection, bounded batches; the
   ledger's scripts go through the same one);
2. reserve + settle pairs per second through :class:`budgets.BudgetLedger` (one brand,
   so one hash slot: the worst case for a Redis Cluster shard), and their ratio to the
   pipelined floor (a pair is two EVALSHA calls);
3. the overspend check at concurrency 1, 50 and 500: many turns race for four tight
   scopes (user day, user month, brand month, conversation) with actual usage at most
   the reservation; it prints the largest committed usage above any limit seen, which
   must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from budgets import BudgetLedger, BudgetLimits, Refused, ReservationRequest
from budgets.keys import BrandKeys
from gateway.cli import new_event_loop
from gateway.gc_policy import tune_for_serving
from gateway.runtime import REDIS_BATCH_TIMEOUT_S
from memory.pipelining import AutoPipeline
from memory.redis_client import connect_pipeline_client, connect_redis
from tests.redis_server import local_redis_server

UNLIMITED = BudgetLimits(user_day=-1, user_month=-1, brand_month=-1, conversation=-1)
TIGHT = BudgetLimits(user_day=2_000, user_month=3_000, brand_month=30_000, conversation=1_500)


def connect(url: str, connections: int) -> aioredis.Redis:
    """The runtime's client (its pool serves waiters in turn), waiting for a free
    connection as long as it takes instead of failing when full."""
    return connect_redis(url, max_connections=connections, pool_timeout=None)


async def run_tasks(tasks: int, total: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Run ``one(i)`` for i in range(total) on ``tasks`` workers; answers calls per second."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return total / (time.perf_counter() - started)


def runtime_pipeline(url: str) -> AutoPipeline:
    """The auto-pipeline as the gateway's runtime makes it for a real server: a client of
    its own (no per-reply timeouts), a connection kept between batches, each batch bounded."""
    client = connect_pipeline_client(url)
    assert client is not None
    return AutoPipeline(client, timeout_s=REDIS_BATCH_TIMEOUT_S, hold_connection=True)


async def evalsha_floor(client: aioredis.Redis, runner: AutoPipeline, tasks: int, calls: int,
                        *, pipelined: bool) -> float:
    """Bare EVALSHA of ``return 1``: one round trip per call, or through the auto-pipeline."""
    script = runner.register("return 1")
    call = (lambda: runner.run(script, [], [])) if pipelined else script
    await call()

    async def one(_: int) -> None:
        await call()

    return await run_tasks(tasks, calls, one)


async def pair_rate(client: aioredis.Redis, runner: AutoPipeline, tasks: int,
                    pairs: int) -> float:
    ledger = BudgetLedger(client, pipeline=runner)
    run = random.randrange(1 << 30)

    async def one(i: int) -> None:
        request_id = f"{run}-{i}"
        await ledger.reserve(ReservationRequest(
            brand="bench", user_id=f"user-{i % 1000}", conversation_id=f"conv-{i % 5000}",
            request_id=request_id, tokens=300, limits=UNLIMITED))
        await ledger.settle(brand="bench", request_id=request_id, actual_tokens=250,
                            cost_usd=0.0001)

    return await run_tasks(tasks, pairs, one)


def limit_of(key: str, keys: BrandKeys) -> int:
    scope = key.removeprefix(keys.prefix)
    if scope.startswith("b:m:"):
        return TIGHT.brand_month
    if scope.startswith("c:"):
        return TIGHT.conversation
    return TIGHT.user_day if ":d:" in scope else TIGHT.user_month


async def overspend(clients: list[aioredis.Redis], concurrency: int, turns: int) -> tuple[int, int]:
    """Race ``turns`` turns on ``concurrency`` tasks; (worst overspend seen, turns admitted)."""
    brand = f"overspend-{concurrency}"
    ledgers = [BudgetLedger(c) for c in clients]
    rng = random.Random(concurrency)
    plan = [(rng.randrange(20), rng.randrange(50), rng.randint(1, 60)) for _ in range(turns)]
    admitted = 0

    async def one(i: int) -> None:
        nonlocal admitted
        user, conversation, tokens = plan[i]
        ledger = ledgers[i % len(ledgers)]
        outcome = await ledger.reserve(ReservationRequest(
            brand=brand, user_id=f"u{user}", conversation_id=f"c{conversation}",
            request_id=f"r{i}", tokens=tokens, limits=TIGHT))
        if isinstance(outcome, Refused):
            return
        admitted += 1
        await ledger.settle(brand=brand, request_id=f"r{i}",
                            actual_tokens=rng.randint(0, tokens))

    done = asyncio.Event()
    watcher = asyncio.create_task(watch_overspend(ledgers[0], brand, done))
    await run_tasks(concurrency, turns, one)
    done.set()
    return max(await watcher, await final_overspend(clients[0], brand)), admitted


async def watch_overspend(ledger: BudgetLedger, brand: str, done: asyncio.Event) -> int:
    """While the race runs: the most that u0's day or month or the brand's month went over."""
    worst = 0
    while not done.is_set():
        view = await ledger.usage(brand, "u0")
        worst = max(worst, view.user_day.committed - TIGHT.user_day,
                    view.user_month.committed - TIGHT.user_month,
                    view.brand_month.committed - TIGHT.brand_month)
        await asyncio.sleep(0.001)
    return worst


async def final_overspend(client: aioredis.Redis, brand: str) -> int:
    """The largest ``used + reserved - limit`` over every scope key of the brand."""
    keys, worst = BrandKeys.of(brand), 0
    async for raw in client.scan_iter(match=f"{keys.prefix}*"):
        key = raw.decode()
        if key.removeprefix(keys.prefix).split(":")[0] not in ("u", "b", "c"):
            continue
        used, reserved = await client.hmget(key, "used", "reserved")
        committed = int(used or 0) + int(reserved or 0)
        worst = max(worst, committed - limit_of(key, keys))
    return worst


async def server_cpu_s(client: aioredis.Redis) -> float:
    cpu = await client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def pair_cpu_us(client: aioredis.Redis, runner: AutoPipeline, tasks: int,
                      pairs: int) -> tuple[float, float]:
    """CPU microseconds per pair spent by this process and by redis-server."""
    client_before, server_before = time.process_time(), await server_cpu_s(client)
    await pair_rate(client, runner, tasks, pairs)
    client_us = (time.process_time() - client_before) / pairs * 1e6
    return client_us, (await server_cpu_s(client) - server_before) / pairs * 1e6


async def throughput(client: aioredis.Redis, runner: AutoPipeline, pairs: int, tasks: int,
                     rounds: int) -> None:
    """Best of ``rounds`` alternating rounds, so a noisy neighbour hurts all figures alike."""
    direct, pipelined, rate = 0.0, 0.0, 0.0
    for _ in range(rounds):
        direct = max(direct, await evalsha_floor(client, runner, tasks, pairs * 2,
                                                 pipelined=False))
        pipelined = max(pipelined, await evalsha_floor(client, runner, tasks, pairs * 2,
                                                       pipelined=True))
        rate = max(rate, await pair_rate(client, runner, tasks, pairs))
    client_us, server_us = await pair_cpu_us(client, runner, tasks, pairs)
    print(f"bare EVALSHA, a round trip each   {direct:9,.0f} calls/s = "
          f"{direct / 2:9,.0f} pairs/s")
    print(f"bare EVALSHA, auto-pipelined      {pipelined:9,.0f} calls/s = "
          f"{pipelined / 2:9,.0f} pairs/s  (the floor)")
    print(f"reserve + settle (BudgetLedger)   {rate:9,.0f} pairs/s "
          f"= {rate / (pipelined / 2):.0%} of the floor  ({tasks} tasks, one process, "
          f"best of {rounds})")
    print(f"CPU per pair: client {client_us:.0f} us, redis-server {server_us:.0f} us; "
          f"with a core each: ~{1e6 / max(client_us, server_us):,.0f} pairs/s")


async def main(pairs: int, tasks: int, rounds: int) -> None:
    with local_redis_server() as url:
        client = connect(url, tasks)
        await client.ping()
        runner = runtime_pipeline(url)
        await throughput(client, runner, pairs, tasks, rounds)
        await runner.redis.aclose()
        clients = [connect(url, 64) for _ in range(8)]
        for concurrency in (1, 50, 500):
            worst, admitted = await overspend(clients, concurrency, turns=3_000)
            print(f"concurrency {concurrency:3}: {admitted:5} of 3000 turns admitted, "
                  f"overspend {worst}")
        for c in (client, *clients):
            await c.aclose()
    print("rerun: .venv/bin/python bench/budgets.py [--pairs N] [--tasks N] [--rounds N]")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--asyncio", action="store_true",
                        help="asyncio's own event loop instead of the server's (uvloop)")
    args = parser.parse_args()
    tune_for_serving()
    with asyncio.Runner(loop_factory=None if args.asyncio else new_event_loop) as loop:
        print(f"event loop: {type(loop.get_loop()).__module__}")
        loop.run(main(args.pairs, args.tasks, args.rounds))
