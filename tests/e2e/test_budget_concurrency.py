"""Budgets under real concurrency, end to end: 100 simultaneous turns on WebSockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.e2e.wsclient import ChatResult, ChatSocket
from tests.gateway_harness import make_config, running_gateway, runtime_of, token

BUDGET = 3000


async def test_100_concurrent_turns_never_overspend_a_small_brand_budget(
        tmp_path: Path, redis_url: str) -> None:
    config = make_config(tmp_path, redis_url,
                         brands={"growain": {"monthly_budget": BUDGET,
                                             "alert_threshold": 0.5}},
                         mock={"token_delay_ms": 2})
    async with running_gateway(config) as server, aiohttp.ClientSession() as http:
        all_connected = asyncio.Barrier(101)

        async def one_turn(i: int) -> ChatResult:
            url = server.make_url("/v1/ws").with_query(token=token(user=f"user{i}"))
            async with http.ws_connect(url) as ws:
                await all_connected.wait()  # every socket is open before any chat is sent
                return await ChatSocket(ws).chat(f"question {i}", frame_id=f"q{i}",
                                                 max_tokens=64)

        tasks = [asyncio.create_task(one_turn(i)) for i in range(100)]
        await all_connected.wait()
        results = await asyncio.gather(*tasks)
        brand = await runtime_of(server).ledger.brand_usage("growain")
    done = [r.last for r in results if r.last["type"] == "done"]
    refused = [r.last for r in results if r.last["type"] == "error"]
    assert done and refused, "the budget should admit some turns and refuse others"
    assert all(e["code"] == "budget_exceeded" and e["scope"] == "brand_month" for e in refused)
    settled = sum(d["usage"]["total_tokens"] for d in done)
    assert brand.reserved == 0
    assert brand.used == settled  # the ledger holds exactly what the clients were told
    assert brand.used <= BUDGET
