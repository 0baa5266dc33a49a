"""Backends for the memory contract tests: moto over real HTTP, SQLite, files, Redis;
the runtime's pipeline client, its writes counted."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from memory import pipelining
from memory.cold import Archive, open_archive
from memory.redis_client import RedisClient, connect_pipeline_client
from memory.warm import HistoryStore, open_history
from tests.memory.factories import FakeClock
from tests.redis_server import free_port


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Dummy credentials and the moto endpoint, for the standard AWS chain."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_DYNAMODB",
                 "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_KMS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return moto_endpoint


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["dynamodb", "sqlite"])
def history_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "dynamodb":
        request.getfixturevalue("aws")
        return f"dynamodb://{unique_name('history')}"
    return f"sqlite:///{tmp_path_factory.mktemp('warm')}/history.db"


@pytest.fixture
async def history(history_url: str, clock: FakeClock) -> AsyncIterator[HistoryStore]:
    store = await open_history(history_url, clock=clock)
    await store.ensure_schema()
    yield store
    await store.aclose()


@pytest.fixture
def kms_key_id(aws: str) -> str:
    """A customer managed key in moto's KMS (sync: async fixtures can't be requested lazily)."""
    import boto3

    kms = boto3.client("kms", region_name="us-east-1")
    return str(kms.create_key(Description="chatgate archive (test)")["KeyMetadata"]["KeyId"])


@pytest.fixture(params=["s3", "file"])
async def archive(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Archive]:
    if request.param == "s3":
        key_id = request.getfixturevalue("kms_key_id")
        url = f"s3://{unique_name('archive')}/turns"
        store = await open_archive(url, kms_key_id=key_id)
    else:
        store = await open_archive(f"file://{tmp_path_factory.mktemp('cold')}/archive")
    assert store is not None
    await store.ensure_bucket()
    yield store
    await store.aclose()


@pytest.fixture
async def pipeline_client(redis_url: str) -> AsyncIterator[RedisClient]:
    """The runtime's pipeline client of the test's Redis server."""
    client = connect_pipeline_client(redis_url)
    assert client is not None
    yield client
    await client.aclose()


@pytest.fixture
def writes(pipeline_client: RedisClient, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many writes the pipeline's connections make (one entry each)."""
    made: list[int] = []
    connection_class = pipeline_client.connection_pool.connection_class
    send = connection_class.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        made.append(1)
        await send(self, command, check_health)

    monkeypatch.setattr(connection_class, "send_packed_command", counting)
    return made


@pytest.fixture
async def unretrieved() -> AsyncIterator[Callable[[], list[str]]]:
    """The errors nobody retrieved that the event loop has reported so far (collected
    first: an error is reported when its future is freed)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))

    def messages() -> list[str]:
        gc.collect()
        return [str(c.get("message")) for c in reported
                if "never retrieved" in str(c.get("message"))]

    yield messages
    loop.set_exception_handler(None)


@pytest.fixture
def direct_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A count of the replies the auto-pipeline's direct path reads (``[n]``): from
    redis-py's hiredis reader when buffered whole, else through its parser; zero when
    every reply goes through the connection."""
    taken = [0]
    reply = pipelining._reply

    async def counted(*args: Any) -> Any:
        taken[0] += 1
        return await reply(*args)

    monkeypatch.setattr(pipelining, "_reply", counted)
    return taken
