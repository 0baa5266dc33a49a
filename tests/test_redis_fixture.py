from memory.redis_client import RedisClient


async def test_any_redis_runs_lua(any_redis: RedisClient) -> None:
    sha = await any_redis.script_load("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await any_redis.evalsha(sha, 1, "{t}:n", 3) == 3
    assert await any_redis.evalsha(sha, 1, "{t}:n", 4) == 7
