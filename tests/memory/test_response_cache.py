"""The response cache on a real Redis: one-trip lookups, generations, the cross-process lock."""

from __future__ import annotations

import asyncio

from memory.redis_client import RedisClient
from memory.response_cache import CachedAnswer, ResponseCache

ANSWER = CachedAnswer("Paris.", "openai", "m", "stop")


def key_for(cache: ResponseCache, query: str = "Capital of France?", *,
            user_id: str | None = None, brand: str = "acme"):  # type: ignore[no-untyped-def]
    return cache.key(brand=brand, config_fingerprint="f", model="m", system_prompt="",
                     query=query, user_id=user_id)


async def lead_and_publish(cache: ResponseCache, query: str = "Capital of France?", *,
                           user_id: str | None = None, brand: str = "acme") -> bool:
    key = key_for(cache, query, user_id=user_id, brand=brand)
    async with cache.flight(key) as flight:
        assert await cache.lock_or_wait(key, flight) is None  # a miss: this turn leads
        return await cache.publish(key, flight, ANSWER, ttl_s=60)


async def test_a_published_answer_is_served_and_normalized_queries_share_it(
        redis_url: str, redis_client: RedisClient) -> None:
    cache = ResponseCache(redis_client)
    assert await lead_and_publish(cache)
    key = key_for(cache, "  capital of   FRANCE ")
    async with cache.flight(key) as flight:
        assert await cache.lock_or_wait(key, flight) == ANSWER
    assert not await redis_client.exists(key.lock)  # publish released the lock


async def test_a_lookup_is_one_round_trip(redis_client: RedisClient) -> None:
    cache = ResponseCache(redis_client)
    await lead_and_publish(cache)
    await redis_client.config_resetstat()
    key = key_for(cache)
    async with cache.flight(key) as flight:
        assert await cache.lock_or_wait(key, flight) == ANSWER
    stats = await redis_client.info("commandstats")
    outside = {k: v["calls"] for k, v in stats.items()
               if k in ("cmdstat_evalsha", "cmdstat_mget", "cmdstat_get")}
    # GET counts the script's own reads (entry + 2 generation counters); one EVALSHA.
    assert outside == {"cmdstat_evalsha": 1, "cmdstat_get": 3}


async def test_bumping_a_generation_invalidates_at_once(redis_client: RedisClient) -> None:
    cache = ResponseCache(redis_client)
    await lead_and_publish(cache, user_id="alice")
    await lead_and_publish(cache, "Other question", user_id="bob")
    await cache.invalidate("acme", scope="user", user_id="alice")
    alice, bob = key_for(cache, user_id="alice"), key_for(cache, "Other question", user_id="bob")
    assert await cache.get(alice) is None
    assert await cache.get(bob) == ANSWER  # another user's generation did not move
    await cache.invalidate("acme", scope="brand")
    assert await cache.get(bob) is None


async def test_an_answer_finished_after_an_invalidation_is_not_stored(
        redis_client: RedisClient) -> None:
    cache = ResponseCache(redis_client)
    key = key_for(cache)
    async with cache.flight(key) as flight:
        assert await cache.lock_or_wait(key, flight) is None
        await cache.invalidate("acme", scope="model", model="m")  # while it was answering
        assert not await cache.publish(key, flight, ANSWER, ttl_s=60)
    assert await cache.get(key) is None
    assert not await redis_client.exists(key.lock)


async def test_brands_never_share_entries(redis_client: RedisClient) -> None:
    cache = ResponseCache(redis_client)
    await lead_and_publish(cache, brand="acme")
    assert await cache.get(key_for(cache, brand="other")) is None


async def test_another_process_waits_for_the_lock_holder(redis_client: RedisClient) -> None:
    first, second = ResponseCache(redis_client), ResponseCache(redis_client, wait_s=5)
    key = key_for(first)
    async with first.flight(key) as leading:
        assert await first.lock_or_wait(key, leading) is None  # the lock is first's
        other = key_for(second)
        async with second.flight(other) as waiting:
            assert waiting.leader  # separate processes: no shared in-process flight
            waiter = asyncio.ensure_future(second.lock_or_wait(other, waiting))
            await asyncio.sleep(0.12)  # a couple of its polls, not a synchronisation
            assert not waiter.done()
            assert await first.publish(key, leading, ANSWER, ttl_s=60)
            assert await waiter == ANSWER


class LookCountingCache(ResponseCache):
    """The real cache; ``looked`` is set after each of its lookups (the test's clock)."""

    def __init__(self, redis: RedisClient, **options: float) -> None:
        super().__init__(redis, **options)
        self.looked = asyncio.Event()

    async def _look(self, key, lock_ms):  # type: ignore[no-untyped-def]
        outcome = await super()._look(key, lock_ms)
        self.looked.set()
        return outcome


async def test_a_lock_holder_that_gives_up_releases_the_waiter(
        redis_client: RedisClient) -> None:
    first, second = ResponseCache(redis_client), LookCountingCache(redis_client, wait_s=30)
    key = key_for(first)
    async with first.flight(key) as leading:
        assert await first.lock_or_wait(key, leading) is None
        other = key_for(second)
        async with second.flight(other) as waiting:
            waiter = asyncio.ensure_future(second.lock_or_wait(other, waiting))
            await second.looked.wait()  # its first lookup found the lock held: it polls
            assert not waiter.done()
            await first.unlock(key)
            # Answer it uncached, at its next poll (not after wait_s), without the lock.
            assert await asyncio.wait_for(waiter, timeout=5) is None
    assert not await redis_client.exists(key.lock)
