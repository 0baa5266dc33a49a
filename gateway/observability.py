"""Structured logs (structlog, JSON) and Prometheus metrics.

Logs carry ids, figures and outcomes, never message content or secrets. One ``turn`` line
per chat turn is emitted by the service.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TypeVar

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

M = TypeVar("M", Counter, Histogram)
MAX_SERIES = 4096
"""Labelled series a :class:`Metrics` remembers (beyond that, each use looks its own up)."""
QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "anthropic",
                 "botocore", "aiobotocore")


def _orjson_line(event: Any, **options: Any) -> bytes:
    """structlog's JSON serializer: orjson (compact), with structlog's fallback for
    values JSON cannot hold (``default``) and non-string keys as strings. Bytes, written
    as they are by structlog's ``BytesLogger`` (no decode, no ``print``)."""
    return orjson.dumps(event, default=options.get("default"),
                        option=orjson.OPT_NON_STR_KEYS)


def _orjson_text(event: Any, **options: Any) -> str:
    return _orjson_line(event, **options).decode()


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    logging.basicConfig(stream=sys.stderr, level=level, format="%(message)s")
    for noisy in QUIET_LOGGERS:  # one line per upstream request is noise (and CPU)
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # JSON lines are bytes, written by a BytesLogger (structlog's recommended fast path)
    # to stderr's binary buffer; text (the console renderer's, or JSON when stderr was
    # replaced by a stream without a buffer) is printed by a PrintLogger.
    buffer = getattr(sys.stderr, "buffer", None)
    renderer: structlog.typing.Processor
    factory: Any
    if json and buffer is not None:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_line)
        factory = structlog.BytesLoggerFactory(file=buffer)
    else:
        renderer = (structlog.processors.JSONRenderer(serializer=_orjson_text) if json
                    else structlog.dev.ConsoleRenderer())
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,  # tracebacks in the line, not "exc_info"
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


class Metrics:
    """The gateway's metrics, in a registry of their own (one per app)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.turns = Counter("chatgate_turns", "Chat turns by outcome",
                             ["brand", "outcome"], registry=r)
        self.tokens = Counter("chatgate_tokens", "Tokens billed", ["brand", "kind"], registry=r)
        self.cost = Counter("chatgate_cost_usd", "Cost in USD", ["brand"], registry=r)
        self.refusals = Counter("chatgate_refusals", "Turns refused before any provider call",
                                ["brand", "code"], registry=r)
        self.cache = Counter("chatgate_cache_lookups", "Response cache lookups",
                             ["brand", "result"], registry=r)
        self.first_token = Histogram(
            "chatgate_first_token_seconds", "Time from request to first delta", ["brand"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.turn_seconds = Histogram(
            "chatgate_turn_seconds", "Whole turn duration", ["brand"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.connections = Counter("chatgate_ws_connections", "WebSocket connections opened",
                                   ["brand"], registry=r)
        self._series: dict[tuple[Counter | Histogram, tuple[str, ...]], Any] = {}

    def series(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, looked up once: prometheus_client checks the labels,
        builds their tuple and takes a lock on every ``labels()`` call, and a turn makes
        seven. Label values are a brand and a finite set (outcomes, codes, kinds)."""
        key = (metric, labels)
        child = self._series.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._series) < MAX_SERIES:
                self._series[key] = child
        return child
