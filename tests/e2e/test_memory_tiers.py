"""Memory tiers through the gateway: rehydration, durability across SIGKILL, summaries."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.config import Config
from memory.cold import open_archive
from memory.warm import open_history
from tests.e2e.wsclient import ChatSocket
from tests.gateway_harness import TEST_SECRET, make_config, running_gateway, runtime_of, token
from tests.redis_server import free_port


async def _poll(check, *, within_s: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, f"{what} not reached within {within_s}s"
        await asyncio.sleep(0.05)


async def test_expired_hot_cache_rehydrates_from_warm_history(tmp_path: Path,
                                                              redis_url: str) -> None:
    config = make_config(tmp_path, redis_url, gateway={"hot_ttl_s": 1})
    async with running_gateway(config) as server, aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url("/v1/ws"), params={"token": token()}) as ws:
        sock, runtime = ChatSocket(ws), runtime_of(server)
        first = await sock.chat("Remember the word pelican", frame_id="t1")
        conversation_id = first.last["conversation_id"]
        redis = runtime.redis

        async def hot_expired() -> bool:
            return not await redis.exists(f"cg:{{growain}}:msgs:{conversation_id}")

        async def persisted() -> bool:
            meta = await runtime.history.get_conversation("growain", "alice", conversation_id)
            return meta is not None and meta.message_count == 2

        await _poll(persisted, what="write-behind to warm history")
        await _poll(hot_expired, what="hot cache expiry")
        second = await sock.chat("Which word?", frame_id="t2", conversation_id=conversation_id)
    assert second.kinds[-1] == "done"
    # The provider saw system + the first turn (loaded from warm) + the new message.
    assert second.text.startswith("[4 messages, turn 2]")


def _write_config(path: Path, redis_url: str, data_dir: Path) -> None:
    path.write_text(f"""
[settings]
redis_url = "{redis_url}"
history_url = "sqlite:///{data_dir}/history.db"
archive_url = "file://{data_dir}/archive"
jwt_secret = "{TEST_SECRET}"
[gateway]
outbox_claim_idle_ms = 200
[plans.free]
tokens_per_day = -1
tokens_per_month = -1
max_context_window = 4000
history_ttl_days = 7
[plans.enterprise]
tokens_per_day = -1
tokens_per_month = -1
max_context_window = 32000
history_ttl_days = 90
archive = true
[brands.growain]
providers = ["mock:gpt-4o-mini"]
requests_per_minute_per_user = 100000
""")


def _start_gateway(config: Path, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
         "--port", str(port)], cwd=workdir, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(Path.cwd())})


async def _wait_ready(http: aiohttp.ClientSession, port: int) -> None:
    async def ready() -> bool:
        try:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await _poll(ready, within_s=30, what="gateway readiness")


async def test_acknowledged_turns_survive_sigkill(tmp_path: Path, redis_url: str) -> None:
    config_path, data = tmp_path / "gateway.toml", tmp_path / "data"
    _write_config(config_path, redis_url, data)
    port = free_port()
    acknowledged: list[tuple[str, str]] = []  # (user, conversation_id) per done
    async with aiohttp.ClientSession() as http:
        process = _start_gateway(config_path, port, tmp_path)
        try:
            await _wait_ready(http, port)
            for user, plan in (("ann", "free"), ("eve", "enterprise")):
                url = f"http://127.0.0.1:{port}/v1/ws?token={token(user=user, plan=plan)}"
                async with http.ws_connect(url) as ws:
                    sock = ChatSocket(ws)
                    for i in range(5):
                        done = (await sock.chat(f"turn {i}", frame_id=f"{user}{i}")).last
                        assert done["type"] == "done"
                        acknowledged.append((user, done["conversation_id"]))
            process.send_signal(signal.SIGKILL)  # right after the last done
            process.wait(timeout=10)
            process = _start_gateway(config_path, port, tmp_path)
            await _wait_ready(http, port)
            history = await open_history(f"sqlite:///{data}/history.db")
            try:
                async def all_persisted() -> bool:
                    counts = [len(await history.messages("growain", u, c))
                              for u, c in set(acknowledged)]
                    return sum(counts) == 2 * len(acknowledged)

                await _poll(all_persisted, within_s=20, what="every acknowledged turn in warm")
            finally:
                await history.aclose()
            archive = await open_archive(f"file://{data}/archive")
            assert archive is not None
            archived = await archive.read("growain", user_id="eve")
            assert len(archived) == 5 and all(t.archive for t in archived)
            assert await archive.read("growain", user_id="ann") == []
        finally:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def long_config(tmp_path: Path, redis_url: str) -> Config:
    return make_config(
        tmp_path, redis_url,
        plans={"enterprise": {"max_context_window": 700}},
        brands={"growain": {"tokens_per_conversation": -1,
                            "requests_per_minute_per_user": 100000}},
        mock={"answer_tokens": 12})


async def test_long_conversation_stays_in_window_and_summary_is_billed_to_brand(
        long_config: Config) -> None:
    window, max_tokens = 700, 64
    async with running_gateway(long_config) as server, aiohttp.ClientSession() as http, \
            http.ws_connect(server.make_url("/v1/ws"),
                            params={"token": token(plan="enterprise")}) as ws:
        sock, runtime = ChatSocket(ws), runtime_of(server)
        conversation_id = None
        user_tokens = 0
        for i in range(100):  # 200 messages
            result = await sock.chat(f"Message number {i} with some detail about topic {i}",
                                     frame_id=f"m{i}", conversation_id=conversation_id,
                                     max_tokens=max_tokens)
            done = result.last
            assert done["type"] == "done", done
            conversation_id = done["conversation_id"]
            usage = done["usage"]
            # Provider-reported prompt (the mock counts what it received) fits the window.
            assert usage["prompt_tokens"] + max_tokens <= window
            user_tokens += usage["total_tokens"]
        if runtime.persister is not None:
            await runtime.persister.drain()  # write-behind: every turn into warm history
        await runtime.summarizer.drain()
        meta = await runtime.history.get_conversation("growain", "alice", conversation_id)
        usage_view = await runtime.ledger.usage("growain", "alice")
        brand = await runtime.ledger.brand_usage("growain")
    assert meta is not None and meta.message_count == 200
    assert meta.summary and meta.summary_covers > 0
    assert usage_view.user_month.used == user_tokens  # the user paid for turns only
    assert brand.used > user_tokens  # the summaries landed on the brand
