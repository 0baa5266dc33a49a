"""The response cache through the WebSocket, counted at a fake OpenAI server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from budgets import BudgetLimits, ReservationRequest
from gateway.config import Config
from tests.e2e.wsclient import ChatSocket
from tests.fakes.fixtures import openai_fake  # noqa: F401
from tests.fakes.upstream import FakeUpstream, Reply, slow
from tests.gateway_harness import (
    make_config,
    openai_brands,
    running_gateway,
    runtime_of,
    token,
)


@pytest.fixture
def cached_config(tmp_path: Path, redis_url: str, openai_fake: FakeUpstream) -> Config:  # noqa: F811
    overrides = openai_brands(openai_fake.url, "growain", "mindagain")
    overrides["brands"]["mindagain"]["cache"] = "brand"
    return make_config(tmp_path, redis_url, **overrides)


@pytest.fixture
async def server(cached_config: Config) -> AsyncIterator[TestServer]:
    async with running_gateway(cached_config) as gateway:
        yield gateway


async def _ask(server: TestServer, content: str, *, frame_id: str = "q", **claims: str
               ) -> list[dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.ws_connect(
            server.make_url("/v1/ws"), params={"token": token(**claims)}) as ws:
        return (await ChatSocket(ws).chat(content, frame_id=frame_id)).frames


def _text(frames: list[dict[str, object]]) -> str:
    return "".join(str(f["text"]) for f in frames if f["type"] == "delta")


async def test_repeated_first_question_is_served_from_cache(
        server: TestServer, openai_fake: FakeUpstream) -> None:  # noqa: F811
    first = await _ask(server, "What are your opening hours?", user="u1")
    second = await _ask(server, "  what are your OPENING hours ", user="u2")
    assert openai_fake.request_count == 1
    assert first[0]["cached"] is False and second[0]["cached"] is True
    assert _text(second) == _text(first) == Reply().text
    done = second[-1]
    assert done["cached"] is True and done["usage"]["total_tokens"] == 0  # type: ignore[index]
    assert done["cost_usd"] == 0


async def test_a_hit_spends_no_budget_and_is_served_past_a_spent_one(
        tmp_path: Path, redis_url: str, openai_fake: FakeUpstream) -> None:  # noqa: F811
    overrides = openai_brands(openai_fake.url, "growain")
    overrides["plans"] = {"free": {"tokens_per_day": 5_000}}
    async with running_gateway(make_config(tmp_path, redis_url, **overrides)) as server:
        ledger = runtime_of(server).ledger
        await _ask(server, "What are your opening hours?", user="u1")
        second = await _ask(server, "What are your opening hours?", user="u2")
        await runtime_of(server).service.drain()  # the hit's speculative reservation
        u2 = await ledger.usage("growain", "u2")
        assert second[-1]["cached"] is True
        assert (u2.user_day.used, u2.user_day.reserved) == (0, 0)
        # u3 has spent the day: a fresh question is refused, a cached one still served.
        await ledger.reserve(ReservationRequest(
            brand="growain", user_id="u3", conversation_id="c", request_id="spent",
            tokens=5_000, limits=BudgetLimits(5_000, -1, -1, -1)))
        refused = await _ask(server, "Something new entirely", user="u3")
        served = await _ask(server, "What are your opening hours?", user="u3")
        await runtime_of(server).service.drain()
    assert refused[-1]["code"] == "budget_exceeded"
    assert served[-1]["type"] == "done" and served[-1]["cached"] is True
    assert openai_fake.request_count == 1


async def test_follow_up_turns_are_never_cached(server: TestServer,
                                                openai_fake: FakeUpstream) -> None:  # noqa: F811
    async with aiohttp.ClientSession() as http, http.ws_connect(
            server.make_url("/v1/ws"), params={"token": token(user="u1")}) as ws:
        sock = ChatSocket(ws)
        first = await sock.chat("Tell me more", frame_id="a")
        conversation_id = first.last["conversation_id"]
        await sock.chat("Tell me more", frame_id="b", conversation_id=conversation_id)
        await sock.chat("Tell me more", frame_id="c", conversation_id=conversation_id)
    assert openai_fake.request_count == 1 + 2


async def test_concurrent_identical_misses_make_one_upstream_call(
        server: TestServer, openai_fake: FakeUpstream) -> None:  # noqa: F811
    openai_fake.script(slow("Only", " once", delay_s=0.05))
    results = await asyncio.gather(*[
        _ask(server, "Same question for everyone", user=f"user{i}", frame_id=f"q{i}")
        for i in range(50)])
    assert openai_fake.request_count == 1
    assert all(_text(r) == "Only once" for r in results)
    assert sum(1 for r in results if r[0]["cached"]) == 49


async def test_brands_never_share_cached_answers(server: TestServer,
                                                 openai_fake: FakeUpstream) -> None:  # noqa: F811
    openai_fake.script(Reply(deltas=("growain", " answer")), Reply(deltas=("mindagain",
                                                                           " answer")))
    a = await _ask(server, "Shared question", brand="growain")
    b = await _ask(server, "Shared question", brand="mindagain")
    assert openai_fake.request_count == 2
    assert _text(a) == "growain answer" and _text(b) == "mindagain answer"
    assert b[0]["cached"] is False


async def _invalidate(server: TestServer, body: dict[str, str], *, admin: bool = True) -> int:
    jwt = token(user="boss", roles=["admin"] if admin else None)
    async with aiohttp.ClientSession() as http, http.post(
            server.make_url("/admin/cache/invalidate"), json=body,
            headers={"Authorization": f"Bearer {jwt}"}) as response:
        return response.status


@pytest.mark.parametrize("body", [{"scope": "brand"}, {"scope": "model", "model": "gpt-4o-mini"}])
async def test_brand_and_model_invalidation(server: TestServer, openai_fake: FakeUpstream,  # noqa: F811
                                            body: dict[str, str]) -> None:
    await _ask(server, "Invalidate me")
    assert (await _ask(server, "Invalidate me"))[0]["cached"] is True
    assert await _invalidate(server, body) == 200
    assert (await _ask(server, "Invalidate me"))[0]["cached"] is False
    assert openai_fake.request_count == 2


async def test_invalidation_needs_admin(server: TestServer) -> None:
    assert await _invalidate(server, {"scope": "brand"}, admin=False) == 403
    assert await _invalidate(server, {"scope": "galaxy"}) == 400


async def test_preference_change_invalidates_the_users_scope(
        server: TestServer, openai_fake: FakeUpstream) -> None:  # noqa: F811
    headers = {"Authorization": f"Bearer {token(user='pia')}"}
    async with aiohttp.ClientSession() as http:
        async with http.put(server.make_url("/v1/preferences"), json={"language": "fr"},
                            headers=headers) as r:
            assert r.status == 200
        await _ask(server, "Bonjour", user="pia")
        assert (await _ask(server, "Bonjour", user="pia"))[0]["cached"] is True
        # Another user without preferences does not get pia's (French) answer.
        assert (await _ask(server, "Bonjour", user="olaf"))[0]["cached"] is False
        async with http.put(server.make_url("/v1/preferences"), json={"language": "de"},
                            headers=headers) as r:
            assert r.status == 200
    assert (await _ask(server, "Bonjour", user="pia"))[0]["cached"] is False
    # The preference reached the provider in the system prompt.
    system = openai_fake.bodies[-1]["messages"][0]
    assert system["role"] == "system" and "language: de" in system["content"]
    assert openai_fake.request_count == 3


async def test_a_turn_that_leaves_while_another_process_answers_releases_its_reservation(
        cached_config: Config, openai_fake: FakeUpstream) -> None:  # noqa: F811
    """Two gateways on one Redis: the second waits on the first's cross-process lock, its
    client leaves, and the reservation it made with its lookup is released."""
    openai_fake.script(slow("Slow", " answer", delay_s=0.5))
    async with running_gateway(cached_config) as first, \
            running_gateway(cached_config) as second:
        leading = asyncio.ensure_future(_ask(first, "Shared question", user="u1"))
        await openai_fake.wait_for_requests(1)  # the first gateway holds the lock now
        ledger = runtime_of(second).ledger
        async with aiohttp.ClientSession() as http, http.ws_connect(
                second.make_url("/v1/ws"), params={"token": token(user="u2")}) as ws:
            await ws.send_str('{"type":"chat","id":"w","content":"Shared question"}')
            deadline = time.monotonic() + 5
            while (await ledger.usage("growain", "u2")).user_day.reserved == 0:
                assert time.monotonic() < deadline, "the waiting turn never reserved"
                await asyncio.sleep(0.005)
        deadline = time.monotonic() + 5  # released when the server sees the client leave
        while (u2 := await ledger.usage("growain", "u2")).user_day.reserved:
            assert time.monotonic() < deadline, "the reservation was never released"
            await asyncio.sleep(0.005)
        assert u2.user_day.used == 0
        assert _text(await leading) == "Slow answer"
    assert openai_fake.request_count == 1
