"""Each provider's own CPU per streamed answer, side by side in one process.

    .venv/bin/python bench/provider_cpu.py                     # openai, anthropic, bedrock
    .venv/bin/python bench/provider_cpu.py --concurrency 50 --tokens 64 --delay-ms 5 --rounds 5

Starts the mock upstream (``bench/upstream.py``, which speaks OpenAI's Chat Completions,
Anthropic's Messages and Bedrock's ConverseStream) on the load core and, in this process
on the gateway core, streams answers through chatgate's providers exactly as the router does
(``provider.stream(request)`` to the end), ``--concurrency`` at once. Each round gives
every provider one block of ``--seconds``, in turn, so a drift of the machine hits them
alike; a provider's figure is this process's CPU over its blocks divided by the answers
(and the text deltas) they streamed. The providers run with their SDKs and our aiohttp
transport, as the gateway runs them; nothing else of the gateway is in the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import services as svc
from run import GATEWAY_CORE, LOAD_CORE

from gateway.config import ProviderOptions
from providers.anthropic_provider import AnthropicProvider
from providers.base import ChatMessage, ProviderRequest, TextDelta
from providers.bedrock_provider import BedrockProvider
from providers.openai_provider import OpenAIProvider


def _bedrock(options: ProviderOptions, *, api_key: str) -> BedrockProvider:
    """Bedrock through aioboto3 as the gateway runs it, signing with dummy credentials."""
    import aioboto3

    session = aioboto3.Session(aws_access_key_id="bench", aws_secret_access_key=api_key,
                               region_name="us-east-1")
    return BedrockProvider(options, region="us-east-1", session=session)


PROVIDERS: dict[str, tuple[Callable[..., Any], str]] = {
    "openai": (OpenAIProvider, "/v1"),
    "anthropic": (AnthropicProvider, ""),
    "bedrock": (_bedrock, ""),
}


async def block(provider: Any, *, concurrency: int, seconds: float) -> tuple[float, int, int]:
    """CPU seconds, answers and text deltas while ``concurrency`` streams run ``seconds``."""
    deadline = time.monotonic() + seconds
    answers = deltas = 0

    async def client(index: int) -> None:
        nonlocal answers, deltas
        turn = 0
        while time.monotonic() < deadline:
            turn += 1
            request = ProviderRequest(
                model="bench-model", max_tokens=1024, request_id=f"b{index}-{turn}",
                messages=(ChatMessage("system", "You are terse."),
                          ChatMessage("user", f"{index}-{turn}: tell me about the sea")))
            async for event in provider.stream(request):
                if isinstance(event, TextDelta):
                    deltas += 1
            answers += 1

    started = time.process_time()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return time.process_time() - started, answers, deltas


async def measure(names: list[str], base_url: str, args: argparse.Namespace
                  ) -> dict[str, list[tuple[float, int, int]]]:
    providers = {name: PROVIDERS[name][0](ProviderOptions(
        base_url=base_url + PROVIDERS[name][1]), api_key="bench-key") for name in names}
    results: dict[str, list[tuple[float, int, int]]] = {name: [] for name in names}
    try:
        for provider in providers.values():  # warm: connections, first-call setup
            await block(provider, concurrency=args.concurrency, seconds=1.0)
        for round_ in range(args.rounds):
            order = names if round_ % 2 == 0 else list(reversed(names))
            for name in order:
                results[name].append(await block(providers[name],
                                                 concurrency=args.concurrency,
                                                 seconds=args.seconds))
    finally:
        for provider in providers.values():
            await provider.aclose()
    return results


def report(results: dict[str, list[tuple[float, int, int]]], args: argparse.Namespace) -> str:
    first = next(iter(results))
    lines = [f"Providers side by side: {args.concurrency} streams, {args.tokens} deltas "
             f"{args.delay_ms:g} ms apart, {args.rounds} rounds of {args.seconds:g} s each "
             f"(this process on core {GATEWAY_CORE}, the upstream on core {LOAD_CORE}).", "",
             f"| provider | answers | deltas a read | CPU µs per answer | CPU µs per delta "
             f"| vs {first}, per round | median |", "|---|---|---|---|---|---|---|"]
    base = [cpu / answers for cpu, answers, _ in results[first]]
    for name, rounds in results.items():
        per_answer = [cpu / answers for cpu, answers, _ in rounds]
        per_delta = [cpu / deltas for cpu, _, deltas in rounds]
        answers = sum(a for _, a, _ in rounds)
        deltas = sum(d for _, _, d in rounds)
        ratios = [mine / theirs for mine, theirs in zip(per_answer, base, strict=True)]
        lines.append(
            f"| {name} | {answers} | {answers * args.tokens / max(deltas, 1):.2f} | "
            f"{1e6 * statistics.median(per_answer):.0f} | "
            f"{1e6 * statistics.median(per_delta):.1f} | "
            f"{', '.join(f'{r:.3f}' for r in ratios)} | {statistics.median(ratios):.3f}× |")
    lines += ["", "deltas a read: the tokens an answer carried per text delta it yielded "
              "(above 1: pieces that arrived together left as one).",
              f"Rerun: .venv/bin/python bench/provider_cpu.py --concurrency {args.concurrency} "
              f"--tokens {args.tokens} --delay-ms {args.delay_ms:g} --rounds {args.rounds} "
              f"--seconds {args.seconds:g}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--providers", default="openai,anthropic,bedrock")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    names = [n.strip() for n in args.providers.split(",") if n.strip()]
    if unknown := [n for n in names if n not in PROVIDERS]:
        parser.error(f"unknown providers: {', '.join(unknown)} (known: {', '.join(PROVIDERS)})")
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {GATEWAY_CORE})
    with tempfile.TemporaryDirectory(prefix="chatgate-providers-") as tmp:
        upstream = svc.start_upstream(Path(tmp), LOAD_CORE if (os.cpu_count() or 1) > 1
                                      else None)
        try:
            svc.set_profile(upstream, tokens=args.tokens, ttft_ms=0, delay_ms=args.delay_ms)
            results = asyncio.run(measure(names, f"http://127.0.0.1:{upstream.port}", args))
        finally:
            upstream.stop()
    print(report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
