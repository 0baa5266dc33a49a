"""CloudWatch metrics of the Lambda transport, as embedded metric format (EMF) log lines.

A Lambda function has no scrape endpoint; one JSON line per turn on stdout becomes
CloudWatch metrics without an API call on the hot path. Each line publishes under two
dimension sets: ``[Brand]`` (the dashboard's per-brand widgets) and ``[]`` (one series
across brands, which the alarms watch: an alarm cannot aggregate a dimension).

Names (namespace from ``CHATGATE_EMF_NAMESPACE``, ``Chatgate`` on Lambda); the SAM
template's alarms and dashboard use exactly these: ``Turns``, ``Errors``, ``ClientGone``,
``CacheHits``, ``CacheMisses``, ``PromptTokens``, ``CompletionTokens`` (counts),
``TurnLatency``, ``FirstTokenLatency`` (milliseconds) and ``BrandBudgetUsedRatio`` (the
brand's committed month over its budget, 0..1; the 80 % alarm watches it).
"""

from __future__ import annotations

import sys
from typing import IO, Any

import orjson

from gateway.frames import DoneFrame

TURNS, ERRORS, CLIENT_GONE = "Turns", "Errors", "ClientGone"
CACHE_HITS, CACHE_MISSES = "CacheHits", "CacheMisses"
TURN_LATENCY, FIRST_TOKEN_LATENCY = "TurnLatency", "FirstTokenLatency"
PROMPT_TOKENS, COMPLETION_TOKENS = "PromptTokens", "CompletionTokens"
BUDGET_RATIO = "BrandBudgetUsedRatio"
UNITS = {TURNS: "Count", ERRORS: "Count", CLIENT_GONE: "Count", CACHE_HITS: "Count",
         CACHE_MISSES: "Count", TURN_LATENCY: "Milliseconds",
         FIRST_TOKEN_LATENCY: "Milliseconds", PROMPT_TOKENS: "Count",
         COMPLETION_TOKENS: "Count", BUDGET_RATIO: "None"}

ENDED_WELL = frozenset({"stop", "length", "cancelled", "client_gone"})


def turn_values(*, outcome: str, done: DoneFrame | None,
                budget_ratio: float | None) -> dict[str, float]:
    """A turn's metric values: what its ``done`` frame reported, and how it ended."""
    values: dict[str, float] = {TURNS: 1, ERRORS: 0 if outcome in ENDED_WELL else 1,
                                CLIENT_GONE: 1 if outcome == "client_gone" else 0}
    if done is not None:
        values[CACHE_HITS if done.cached else CACHE_MISSES] = 1
        values[PROMPT_TOKENS] = done.usage.get("prompt_tokens", 0)
        values[COMPLETION_TOKENS] = done.usage.get("completion_tokens", 0)
        for name, stage in ((TURN_LATENCY, "total"), (FIRST_TOKEN_LATENCY, "first_token")):
            if stage in done.timings_ms:
                values[name] = done.timings_ms[stage]
    if budget_ratio is not None:
        values[BUDGET_RATIO] = round(budget_ratio, 6)
    return values


def emf_document(namespace: str, brand: str, values: dict[str, float], *,
                 timestamp_ms: int) -> dict[str, Any]:
    return {
        "_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": [{
            "Namespace": namespace, "Dimensions": [["Brand"], []],
            "Metrics": [{"Name": name, "Unit": UNITS[name]} for name in values],
        }]},
        "Brand": brand,
        **values,
    }


def write_emf(document: dict[str, Any], stream: IO[str] | None = None) -> None:
    out = stream or sys.stdout
    out.write(orjson.dumps(document).decode() + "\n")
    out.flush()
