from memory.redis_client import connect_redis


async def test_embedded_clients_with_the_same_url_share_one_server() -> None:
    a, b = connect_redis("memory://shared-test"), connect_redis("memory://shared-test")
    other = connect_redis("memory://other-test")
    await a.set("k", "v")
    assert await b.get("k") == b"v"
    assert await other.get("k") is None
    for client in (a, b, other):
        await client.aclose()


async def test_real_server_client_uses_a_blocking_pool(redis_url: str) -> None:
    client = connect_redis(redis_url)
    assert type(client.connection_pool).__name__ == "BlockingConnectionPool"
    assert await client.ping()
    await client.aclose()
