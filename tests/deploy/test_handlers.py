"""The synchronous Lambda entry points: warm-up, one loop and one runtime per process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from deploy import handlers
from deploy.connections import principal_key
from deploy.events import ConnectionInfo, connect_event, disconnect_event
from tests.gateway_harness import TEST_SECRET, token


@pytest.fixture
def process(monkeypatch: pytest.MonkeyPatch) -> Iterator[handlers.LambdaProcess]:
    """A fresh execution environment in place of the module's, closed afterwards."""
    fresh = handlers.LambdaProcess(tune_gc=False)  # the test process keeps its collector
    monkeypatch.setattr(handlers, "process", fresh)
    yield fresh
    fresh.close()


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("CHATGATE_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHATGATE_JWT_SECRET", TEST_SECRET)
    monkeypatch.setenv("CHATGATE_HISTORY_URL", f"sqlite:///{tmp_path}/history.db")
    monkeypatch.setenv("CHATGATE_ARCHIVE_URL", f"file://{tmp_path}/archive")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "chatgate-test")
    return monkeypatch


def info(connection_id: str = "Tst0000000000Aa=") -> ConnectionInfo:
    return ConnectionInfo(connection_id=connection_id, domain_name="api.example.test",
                          stage="prod", source_ip="127.0.0.1", user_agent="test",
                          connected_at_ms=int(time.time() * 1000))


@pytest.mark.parametrize("event", [
    {"warmup": True},
    {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
])
def test_warmup_answers_without_touching_redis(process: handlers.LambdaProcess,
                                               lambda_env: pytest.MonkeyPatch,
                                               event: dict[str, object]) -> None:
    lambda_env.setenv("CHATGATE_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens
    started = time.perf_counter()
    assert handlers.handle(event, None) == {"statusCode": 200, "body": "warm"}
    assert time.perf_counter() - started < 0.05
    assert not process.opened


def test_real_event_after_warmup_does_reach_redis(process: handlers.LambdaProcess,
                                                  lambda_env: pytest.MonkeyPatch) -> None:
    lambda_env.setenv("CHATGATE_REDIS_URL", "redis://127.0.0.1:1/0")
    handlers.handle({"warmup": True})
    event = connect_event(info(), headers={}, query={"token": token()})
    with pytest.raises(redis.exceptions.ConnectionError):
        handlers.handle(event, None)


def test_events_share_one_loop_and_runtime(process: handlers.LambdaProcess,
                                           lambda_env: pytest.MonkeyPatch,
                                           redis_server_url: str) -> None:
    lambda_env.setenv("CHATGATE_REDIS_URL", redis_server_url)
    conn = info("Shared00000000A=")
    refused = handlers.handle(connect_event(conn, headers={}, query={"token": "nope"}))
    assert refused["statusCode"] == 401
    assert "unauthorized" in refused["body"]
    gateway = process.gateway
    loop = process.loop
    headers = {"Authorization": f"Bearer {token(user='hank')}"}
    assert handlers.handle(connect_event(conn, headers=headers, query={}))["statusCode"] == 200
    assert process.gateway is gateway and process.loop is loop  # warm: nothing reopened
    client = redis.Redis.from_url(redis_server_url)
    try:
        assert b'"sub":"hank"' in client.get(principal_key(conn.connection_id))
        gone = handlers.handle(disconnect_event(conn, status_code=1000))
        assert gone["statusCode"] == 200
        assert client.get(principal_key(conn.connection_id)) is None
    finally:
        client.close()


def test_malformed_event_is_a_400(process: handlers.LambdaProcess,
                                  lambda_env: pytest.MonkeyPatch,
                                  redis_server_url: str) -> None:
    lambda_env.setenv("CHATGATE_REDIS_URL", redis_server_url)
    assert handlers.handle({"requestContext": {"routeKey": "$default"}})["statusCode"] == 400


def test_persist_entry_point_drains_the_outbox(process: handlers.LambdaProcess,
                                               lambda_env: pytest.MonkeyPatch,
                                               redis_server_url: str) -> None:
    lambda_env.setenv("CHATGATE_REDIS_URL", redis_server_url)
    scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    answer = handlers.persist(scheduled, None)  # a schedule here is work, not a warm-up
    assert answer["statusCode"] == 200 and answer["body"].startswith("drained ")
    assert process.opened
