"""Brand budget alerts: emitted once per brand and month, when usage crosses the threshold.

The settle script detects the crossing atomically (it sets the brand month's ``alerted``
flag with ``HSETNX``), so exactly one settle per period reports it, however many run at
once. The ledger then hands a :class:`BudgetAlert` to an :class:`AlertSink`; the sink
here, :class:`BudgetAlerter`, writes a structured log line (figures only, never message
content), counts ``chatgate_budget_alerts_total{brand}`` and, when configured, delivers
the alert through one :class:`AlertPublisher`: an SNS topic (:class:`SnsPublisher`) or a
webhook (:class:`WebhookPublisher`). A failed delivery is logged and counted, never
raised: the usage it reports is already recorded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import aioboto3
import aiohttp
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Counter

from gateway.config import Settings

log = structlog.get_logger("chatgate.budgets")

BUDGET_ALERTS = Counter(
    "chatgate_budget_alerts_total",
    "Brand monthly budget threshold crossings (one per brand and month).",
    ["brand"],
)
ALERT_DELIVERY_FAILURES = Counter(
    "chatgate_budget_alert_delivery_failures_total",
    "Budget alerts that could not be delivered to their SNS topic or webhook.",
    ["brand", "channel"],
)
DELIVERY_ERRORS = (BotoCoreError, ClientError, aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """A brand's usage in ``month`` (YYYYMM) reached ``alert_tokens`` of ``budget_tokens``."""

    brand: str
    month: str
    used_tokens: int
    alert_tokens: int
    budget_tokens: int
    cost_usd: float

    @property
    def threshold(self) -> float:
        return self.alert_tokens / self.budget_tokens if self.budget_tokens > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"type": "budget_alert", **asdict(self), "threshold": round(self.threshold, 4)}


class AlertSink(Protocol):
    """Where the ledger reports a threshold crossing, from inside ``settle``.

    It is awaited once per brand and month; it should not raise (the settle it reports
    is already recorded, and an exception would reach the settle's caller).
    """

    async def budget_alert(self, alert: BudgetAlert) -> None: ...


class AlertPublisher(Protocol):
    """One delivery channel for alerts."""

    @property
    def channel(self) -> str: ...

    async def publish(self, alert: BudgetAlert) -> None: ...


class SnsPublisher:
    """Publishes each alert as a JSON message to an SNS topic (one client per alert)."""

    channel = "sns"

    def __init__(self, topic_arn: str, *, session: aioboto3.Session | None = None,
                 endpoint_url: str | None = None, region_name: str | None = None) -> None:
        self._topic_arn = topic_arn
        self._session = session or aioboto3.Session()
        self._endpoint_url = endpoint_url
        self._region_name = region_name

    async def publish(self, alert: BudgetAlert) -> None:
        async with self._session.client(
            "sns", endpoint_url=self._endpoint_url, region_name=self._region_name
        ) as sns:
            await sns.publish(
                TopicArn=self._topic_arn,
                Subject=_subject(alert),
                Message=json.dumps(alert.as_dict()),
                MessageAttributes={"brand": {"DataType": "String", "StringValue": alert.brand}},
            )


def _subject(alert: BudgetAlert) -> str:
    """SNS subjects are ASCII, at most 100 characters; the message carries the exact brand."""
    brand = alert.brand.encode("ascii", "replace").decode()
    return f"chatgate budget alert: {brand} {alert.month}"[:100]


class WebhookPublisher:
    """POSTs each alert as JSON to a URL, on a session the application owns."""

    channel = "webhook"

    def __init__(self, url: str, session: aiohttp.ClientSession, *,
                 timeout_s: float = 5.0) -> None:
        self._url = url
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def publish(self, alert: BudgetAlert) -> None:
        async with self._session.post(self._url, json=alert.as_dict(),
                                      timeout=self._timeout) as response:
            response.raise_for_status()


class BudgetAlerter:
    """The :class:`AlertSink` of the gateway: log line, metric, then optional delivery."""

    def __init__(self, publisher: AlertPublisher | None = None) -> None:
        self._publisher = publisher

    async def budget_alert(self, alert: BudgetAlert) -> None:
        log.warning("budget_alert", **alert.as_dict())
        BUDGET_ALERTS.labels(brand=alert.brand).inc()
        if self._publisher is None:
            return
        try:
            await self._publisher.publish(alert)
        except DELIVERY_ERRORS as exc:
            channel = self._publisher.channel
            ALERT_DELIVERY_FAILURES.labels(brand=alert.brand, channel=channel).inc()
            log.error("budget_alert_delivery_failed", brand=alert.brand, month=alert.month,
                      channel=channel, error=type(exc).__name__)


def publisher_from_settings(settings: Settings, *, http: aiohttp.ClientSession | None = None,
                            aws_session: aioboto3.Session | None = None,
                            aws_endpoint_url: str | None = None,
                            aws_region: str | None = None) -> AlertPublisher | None:
    """The configured channel: the SNS topic if set, else the webhook if set, else none."""
    if settings.alert_sns_topic_arn:
        return SnsPublisher(settings.alert_sns_topic_arn, session=aws_session,
                            endpoint_url=aws_endpoint_url, region_name=aws_region)
    if settings.alert_webhook_url:
        if http is None:
            raise ValueError("alert_webhook_url is set: pass the application's ClientSession")
        return WebhookPublisher(settings.alert_webhook_url, http)
    return None
