"""The brand budget alert: once per brand and month, however many settles cross at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aioboto3
import aiohttp
import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from budgets import (
    BudgetAlert,
    BudgetAlerter,
    BudgetLedger,
    BudgetLimits,
    SnsPublisher,
    WebhookPublisher,
    publisher_from_settings,
)
from gateway.config import Settings
from memory.redis_client import RedisClient
from tests.budgets.conftest import ManualClock, RecordingSink, request
from tests.redis_server import free_port

BRAND_1000 = BudgetLimits(user_day=-1, user_month=-1, brand_month=1000, conversation=-1,
                          alert_threshold=0.8)
AN_ALERT = BudgetAlert(brand="growain", month="202611", used_tokens=800, alert_tokens=800,
                       budget_tokens=1000, cost_usd=1.5)


async def turn(ledger: BudgetLedger, request_id: str, tokens: int,
               limits: BudgetLimits = BRAND_1000, *, brand: str = "growain") -> None:
    await ledger.reserve(request(request_id, tokens, limits, user_id=request_id, brand=brand))
    await ledger.settle(brand=brand, request_id=request_id, actual_tokens=tokens,
                        cost_usd=tokens / 1000)


async def test_the_alert_fires_once_at_the_crossing(ledger: BudgetLedger,
                                                    sink: RecordingSink) -> None:
    await turn(ledger, "a", 500)
    assert sink.alerts == []
    await turn(ledger, "b", 300)
    assert sink.alerts == [BudgetAlert(brand="growain", month="202611", used_tokens=800,
                                       alert_tokens=800, budget_tokens=1000, cost_usd=0.8)]
    await turn(ledger, "c", 100)
    assert len(sink.alerts) == 1
    assert (await ledger.brand_usage("growain")).alerted


async def test_the_alert_fires_again_in_the_next_month(
    ledger: BudgetLedger, sink: RecordingSink, clock: ManualClock
) -> None:
    await turn(ledger, "a", 900)
    clock.set(datetime(2026, 12, 1, 0, 0, tzinfo=UTC))
    await turn(ledger, "b", 100)
    assert len(sink.alerts) == 1
    await turn(ledger, "c", 700)
    assert [a.month for a in sink.alerts] == ["202611", "202612"]


async def test_concurrent_settles_report_one_crossing(ledger: BudgetLedger,
                                                      sink: RecordingSink) -> None:
    ids = [f"r{i}" for i in range(60)]
    for request_id in ids:
        await ledger.reserve(request(request_id, 16, BRAND_1000, user_id=request_id))
    await asyncio.gather(*(ledger.settle(brand="growain", request_id=r, actual_tokens=16)
                           for r in ids))
    assert len(sink.alerts) == 1
    assert 800 <= sink.alerts[0].used_tokens < 816


@pytest.mark.parametrize("limits", [
    BudgetLimits(user_day=-1, user_month=-1, brand_month=-1, conversation=-1,
                 alert_threshold=0.5),
    BudgetLimits(user_day=-1, user_month=-1, brand_month=1000, conversation=-1),
])
async def test_no_alert_without_a_budget_or_threshold(ledger: BudgetLedger, sink: RecordingSink,
                                                      limits: BudgetLimits) -> None:
    await turn(ledger, "a", 5000, limits)
    assert sink.alerts == []


class FakePublisher:
    channel = "fake"

    def __init__(self, error: Exception | None = None) -> None:
        self.published: list[BudgetAlert] = []
        self.error = error

    async def publish(self, alert: BudgetAlert) -> None:
        if self.error:
            raise self.error
        self.published.append(alert)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_alerter_logs_counts_and_publishes() -> None:
    publisher = FakePublisher()
    before = sample("chatgate_budget_alerts_total", brand="growain")
    with capture_logs() as logs:
        await BudgetAlerter(publisher).budget_alert(AN_ALERT)
    assert publisher.published == [AN_ALERT]
    assert sample("chatgate_budget_alerts_total", brand="growain") == before + 1
    (line,) = logs
    assert line["event"] == "budget_alert"
    assert (line["brand"], line["used_tokens"], line["threshold"]) == ("growain", 800, 0.8)


async def test_a_failed_delivery_is_logged_not_raised() -> None:
    publisher = FakePublisher(aiohttp.ClientConnectionError("refused"))
    before = sample("chatgate_budget_alert_delivery_failures_total", brand="growain",
                    channel="fake")
    with capture_logs() as logs:
        await BudgetAlerter(publisher).budget_alert(AN_ALERT)
    assert [entry["event"] for entry in logs] == ["budget_alert", "budget_alert_delivery_failed"]
    assert sample("chatgate_budget_alert_delivery_failures_total", brand="growain",
                  channel="fake") == before + 1


def test_the_configured_channel_is_chosen() -> None:
    assert publisher_from_settings(Settings()) is None
    sns = publisher_from_settings(Settings(alert_sns_topic_arn="arn:aws:sns:us-east-1:1:t"))
    assert isinstance(sns, SnsPublisher)
    with pytest.raises(ValueError):
        publisher_from_settings(Settings(alert_webhook_url="http://127.0.0.1:1/hook"))


# --- SNS, through moto's server over real HTTP ----------------------------------------

@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


_AWS = aioboto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")


def aws_session() -> aioboto3.Session:
    """One session for the module: botocore loads each service's model once per session."""
    return _AWS


@pytest.fixture
async def topic_with_queue(moto_endpoint: str) -> AsyncIterator[tuple[str, str]]:
    """An SNS topic and the URL of an SQS queue subscribed to it."""
    session, name = aws_session(), f"budget-alerts-{free_port()}"
    async with session.client("sns", endpoint_url=moto_endpoint) as sns, \
            session.client("sqs", endpoint_url=moto_endpoint) as sqs:
        topic_arn = (await sns.create_topic(Name=name))["TopicArn"]
        queue_url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        attributes = await sqs.get_queue_attributes(QueueUrl=queue_url,
                                                    AttributeNames=["QueueArn"])
        await sns.subscribe(TopicArn=topic_arn, Protocol="sqs",
                            Endpoint=attributes["Attributes"]["QueueArn"])
        yield topic_arn, queue_url


async def received(moto_endpoint: str, queue_url: str) -> list[dict[str, Any]]:
    async with aws_session().client("sqs", endpoint_url=moto_endpoint) as sqs:
        reply = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=0)
    return [json.loads(m["Body"]) for m in reply.get("Messages", [])]


async def test_one_sns_message_per_crossing(
    redis_client: RedisClient, clock: ManualClock, moto_endpoint: str,
    topic_with_queue: tuple[str, str],
) -> None:
    topic_arn, queue_url = topic_with_queue
    publisher = SnsPublisher(topic_arn, session=aws_session(), endpoint_url=moto_endpoint)
    ledger = BudgetLedger(redis_client, clock=clock, alerts=BudgetAlerter(publisher))
    brand = "grøwain café " + "x" * 100  # SNS subjects must be ASCII and short
    await asyncio.gather(*(turn(ledger, f"r{i}", 100, brand=brand) for i in range(10)))
    (envelope,) = await received(moto_endpoint, queue_url)
    assert envelope["TopicArn"] == topic_arn
    assert envelope["Subject"].isascii() and len(envelope["Subject"]) <= 100
    message = json.loads(envelope["Message"])
    assert message["type"] == "budget_alert"
    assert (message["brand"], message["month"], message["alert_tokens"]) == (
        brand, "202611", 800)
    assert await received(moto_endpoint, queue_url) == []


# --- webhook, to a real aiohttp server on loopback ----------------------------------------

async def test_one_webhook_post_per_crossing(
    any_redis: RedisClient, clock: ManualClock, aiohttp_server: Any
) -> None:
    posts: list[dict[str, Any]] = []

    async def hook(req: web.Request) -> web.Response:
        posts.append(await req.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as http:
        publisher = WebhookPublisher(str(server.make_url("/hook")), http)
        ledger = BudgetLedger(any_redis, clock=clock, alerts=BudgetAlerter(publisher))
        await asyncio.gather(*(turn(ledger, f"r{i}", 100) for i in range(10)))
    assert [(p["brand"], p["used_tokens"] >= 800) for p in posts] == [("growain", True)]

