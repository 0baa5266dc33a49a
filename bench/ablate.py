"""Where a turn's CPU goes: chatgate beside copies of itself with one part switched off.

    .venv/bin/python bench/ablate.py                       # every part, 3 rounds
    .venv/bin/python bench/ablate.py --parts sdk,cache --rounds 5 --concurrency 60

Each part is a small source patch applied to a temporary copy of this tree's packages:
the OpenAI SDK's request path, the response cache, the budget gate, write-behind
persistence, its SQLite writes, hot memory, the turn's log line, its metrics, the garbage
collector (as tuned), token counting. The copies run in groups (three by default), each
group at once with an unchanged chatgate on the gateway core, each gateway with its own
redis-server and load (bench/compare.py's rounds), so a drift of the machine hits them
alike. A part's share of a turn's CPU is 1 − (the copy's CPU per turn ÷ the unchanged
chatgate's), per round.
Small groups keep the core's caches about as a lone gateway has them: with all the
copies at once, rarely run code (the log line, token counting) measured twice its share.

The copies are not products: they skip work on purpose (no budget, nothing persisted...),
and are deleted after the run. A patch whose anchor text is no longer in the source is
reported as stale and left out: update it here when the code it cuts changes.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import services as svc
from compare import Tree, add_arguments, measure, print_rounds, ratios
from load import raise_fd_limit

PACKAGES = ("gateway", "providers", "memory", "budgets", "deploy")


@dataclass(frozen=True)
class Part:
    name: str
    what: str
    patches: tuple[tuple[str, str, str], ...]  # (file, anchor, replacement)


PARTS = [
    Part("sdk", "the OpenAI request sent by aiohttp itself instead of through the SDK "
                "(and our httpx2 transport under it); the body read and decoded as before", (
        ("providers/openai_provider.py",
         "        return stream_sse_answer(functools.partial(self._send, request), "
         "map_openai_event,\n                                 self.name, "
         "map_openai_errors(self.name))",
         """        return self._direct_stream(request)

    async def _direct_stream(self, request: ProviderRequest
                             ) -> AsyncGenerator[ProviderEvent, None]:
        import aiohttp

        from providers.sse import SSEDecoder, read_sse_events
        session = self._client._client._direct._open()
        response = await session.post(
            self._completions.url, data=orjson.dumps(build_openai_params(request)),
            headers={"Authorization": f"Bearer {self._client.api_key}",
                     "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30))
        try:
            if response.status != 200:
                raise error_for_status(response.status, "ablation", provider=self.name)
            decoder = SSEDecoder()
            async for raw in response.content.iter_any():
                events, done, error = read_sse_events(decoder, raw, map_openai_event,
                                                      self.name)
                for event in events:
                    yield event
                if error is not None:
                    raise error
                if done:
                    await response.read()
                    return
        finally:
            response.release()"""),
    )),
    Part("cache", "the response cache (lookup, lock and publish of a first turn)", (
        ("gateway/service.py", "        key = self._cache_key(plan_, state, prefs)\n",
         "        key = None\n"),
    )),
    Part("gate", "the budget gate: rate check, reserve and settle", (
        ("gateway/service.py", "        rate = self._gate.check_rate(principal, brand)",
         "        rate = asyncio.sleep(0)"),
        ("gateway/service.py",
         """        return asyncio.ensure_future(self._gate.admit(
            state.principal, turn.brand, turn.plan, conversation_id=state.conversation_id,
            request_id=state.request_id, prompt_tokens=turn.context.prompt_tokens,
            max_tokens=turn.max_tokens))""",
         """        from gateway.gates import Admission
        granted = asyncio.get_running_loop().create_future()
        granted.set_result(Admission(state.request_id, turn.brand.name,
                                     turn.context.prompt_tokens + turn.max_tokens,
                                     turn.max_tokens))
        return granted"""),
        ("gateway/service.py",
         """                await asyncio.shield(self._gate.settle(state.principal, state.admission,
                                                       usage=usage, cost_usd=cost))""",
         "                pass"),
    )),
    Part("persistence", "write-behind: the outbox entry, and so the persister's reads, "
                        "warm writes and acknowledgements", (
        ("memory/conversations.py",
         "            return then(asyncio.gather(stored, journal), _nothing)",
         "            return then(asyncio.gather(stored), _nothing)"),
    )),
    Part("sqlite", "the persister's SQL statements (its transaction and thread hop stay)", (
        ("memory/warm/sqlite.py",
         """    conn.executemany("INSERT OR IGNORE INTO audit VALUES (?, ?, ?, ?, ?)", [""",
         """    return list(turns)
    conn.executemany("INSERT OR IGNORE INTO audit VALUES (?, ?, ?, ?, ?)", ["""),
    )),
    Part("hot", "the hot-memory write of a finished turn", (
        ("memory/conversations.py",
         """            return then(asyncio.gather(stored, journal), _nothing)""",
         """            stored.cancel()  # never sent: its batch has not left
            return then(asyncio.gather(journal), _nothing)"""),
    )),
    Part("log", "the turn's log line", (
        ("gateway/service.py", '        log.info("turn", request_id',
         '        if False:\n            log.info("turn", request_id'),
    )),
    Part("metrics", "the turn's Prometheus metrics", (
        ("gateway/observability.py", "class Metrics:", '''class _Nothing:
    def labels(self, *values: str) -> "_Nothing":
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


class Metrics:'''),
        ("gateway/observability.py", "        self.connections = Counter(",
         "        self.turns = self.tokens = self.cost = self.refusals = self.cache = "
         "_Nothing()  # type: ignore[assignment]\n"
         "        self.first_token = self.turn_seconds = _Nothing()  # type: ignore[assignment]\n"
         "        self.connections = Counter("),
    )),
    Part("gc", "the cyclic garbage collector, as tuned for serving (disabled instead)", (
        ("gateway/gc_policy.py", "    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)",
         "    gc.disable()"),
    )),
    Part("tokens", "token counting (tiktoken) replaced by a length estimate", (
        ("memory/tokens.py", "        return len(self._enc.encode_ordinary(text))",
         "        return len(text) // 4 + 1"),
    )),
]


def copy_with(part: Part, into: Path) -> Path | None:
    """The packages with ``part`` switched off, or None if a patch's anchor is gone."""
    tree = into / part.name
    for package in PACKAGES:
        shutil.copytree(svc.ROOT / package, tree / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for file, anchor, replacement in part.patches:
        path = tree / file
        text = path.read_text()
        if text.count(anchor) != 1:
            return None
        path.write_text(text.replace(anchor, replacement))
    return tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(p.name for p in PARTS),
                        help=f"comma-separated, of: {', '.join(p.name for p in PARTS)}")
    parser.add_argument("--group", type=int, default=3,
                        help="copies measured beside one unchanged chatgate at a time")
    add_arguments(parser)
    parser.set_defaults(concurrency=60)
    args = parser.parse_args()
    chosen = [p for p in PARTS if p.name in args.parts.split(",")]
    unknown = set(args.parts.split(",")) - {p.name for p in PARTS}
    if unknown or not chosen:
        parser.error(f"unknown parts: {', '.join(sorted(unknown)) or '(none given)'}")
    raise_fd_limit()
    command = shlex.join([".venv/bin/python", "bench/ablate.py", *sys.argv[1:]])
    groups: list[tuple[Tree, list[Tree]]] = []
    stale: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chatgate-ablate-") as tmp:
        copies = []
        for part in chosen:
            source = copy_with(part, Path(tmp))
            if source is None:
                stale.append(part.name)
            else:
                copies.append(Tree(part.name, source))
        if not copies:
            raise SystemExit(f"every chosen part is stale: {', '.join(stale)}")
        for at in range(0, len(copies), max(1, args.group)):
            base, group = Tree("chatgate", svc.ROOT), copies[at:at + max(1, args.group)]
            print(f"== {', '.join(t.label for t in group)} beside chatgate", flush=True)
            measure([base, *group], args)
            print_rounds([base, *group], args)
            groups.append((base, group))
    print("\n## Where a turn's CPU goes\n")
    print(f"Each group of copies ran beside an unchanged chatgate ({args.protocol}, "
          f"{args.concurrency} streams each, {args.rounds} rounds).\n")
    print("| part switched off | chatgate's CPU ms/turn there | copy vs chatgate, per round "
          "| share of a turn |")
    print("|---|---|---|---|")
    parts = {p.name: p for p in PARTS}
    for base, group in groups:
        if base.errors:  # every share of the group is measured against it
            print(f"| (the unchanged chatgate beside {', '.join(t.label for t in group)} "
                  f"failed {base.errors} turns: that group's shares are not reliable) "
                  f"| | | |")
        for tree in group:
            mine = ratios(tree, base)
            if tree.errors:  # a patch that breaks turns measures nothing
                print(f"| {tree.label}: {parts[tree.label].what} | "
                      f"{statistics.median(base.cpu_ms):.3f} | the copy failed "
                      f"{tree.errors} turns: its patch is broken | — |")
                continue
            print(f"| {tree.label}: {parts[tree.label].what} | "
                  f"{statistics.median(base.cpu_ms):.3f} | "
                  f"{', '.join(f'{r:.3f}' for r in mine)} | "
                  f"{(1 - statistics.median(mine)) * 100:.1f} % |")
    if stale:
        print(f"\nStale (anchor text not found, left out): {', '.join(stale)}")
    print(f"\nShare = 1 − the median ratio. The copies skip work on purpose; they are "
          f"not products.\nRerun: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
