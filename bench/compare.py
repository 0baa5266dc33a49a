"""chatgate against chatgate: source trees side by side, all running at once on one core.

    .venv/bin/python bench/compare.py HEAD~3 .                    # a revision vs the working tree
    .venv/bin/python bench/compare.py before=abc123 after=. --protocol http --rounds 5

Each argument is a source tree, optionally labelled (``label=tree``): a directory holding
chatgate's packages (the working tree, another checkout), or a git revision, checked out
for the run into a temporary worktree. Every tree runs on this checkout's interpreter and
dependencies.

Why at once: this machine's speed drifts by up to 30 % within minutes, so two gateways
measured one after the other compare the machine as much as the code. Each round starts
every tree's ``chatgate serve`` on the gateway core, each with its own redis-server (on
that core too) and SQLite history, drives each with its own load generator at the same
concurrency on the load core, and reads every gateway's CPU over the same window. A drift
hits all of them alike; the figure is each tree's CPU per turn divided by the first
tree's, per round (each gateway's CPU over its load process's life, divided by every turn
it completed, as bench/run.py counts it). The gateways share the core, so each runs
saturated at about its share of it: compare CPU per turn, not turns/s.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procstat
import services as svc
from driver import Driver
from load import raise_fd_limit
from run import GATEWAY_CORE, LOAD_CORE, PROFILES


@dataclass
class Tree:
    label: str
    source: Path
    cpu_ms: list[float] = field(default_factory=list)  # per round
    errors: int = 0  # failed turns over every round
    rows: list[str] = field(default_factory=list)


def _is_source(path: Path) -> bool:
    return (path / "gateway" / "cli.py").is_file()


@contextlib.contextmanager
def checked_out(specs: list[str]) -> Iterator[list[Tree]]:
    """The trees named on the command line; revisions checked out for the duration."""
    worktrees: list[Path] = []
    trees: list[Tree] = []
    try:
        for spec in specs:
            label, _, where = spec.rpartition("=")
            path = Path(where).resolve()
            if not _is_source(path):
                revision = subprocess.run(
                    ["git", "-C", str(svc.ROOT), "rev-parse", "--verify", "--short",
                     f"{where}^{{commit}}"], capture_output=True, text=True)
                if revision.returncode != 0:
                    raise SystemExit(f"{where!r} is neither a chatgate source tree nor a "
                                     f"git revision")
                path = Path(tempfile.mkdtemp(prefix="chatgate-compare-")) / "tree"
                subprocess.run(["git", "-C", str(svc.ROOT), "worktree", "add", "--detach",
                                str(path), where], check=True, capture_output=True)
                worktrees.append(path)
                label = label or f"{where} ({revision.stdout.strip()})"
            trees.append(Tree(label or where, path))
        yield trees
    finally:
        for path in worktrees:
            subprocess.run(["git", "-C", str(svc.ROOT), "worktree", "remove", "--force",
                            str(path)], capture_output=True)


def segment(service: svc.Service, secret: str, args: argparse.Namespace, *,
            tag: str = "compare") -> dict[str, Any]:
    """A closed-loop load of ``args.concurrency`` clients (each its own user) on
    ``service``, over ``args.protocol``, for ``args.seconds`` after ``args.warmup``."""
    url = (f"ws://127.0.0.1:{service.port}/v1/ws" if args.protocol == "ws" else
           f"http://127.0.0.1:{service.port}/v1/chat/completions")
    tokens = [svc.mint_token(secret, f"u{i}") for i in range(args.concurrency)]
    return {"target": {"name": service.name, "protocol": args.protocol, "url": url,
                       "tokens": tokens},
            "mode": "concurrency", "tag": tag, "concurrency": args.concurrency,
            "warmup_s": args.warmup, "duration_s": args.seconds}


def load_at_once(services: list[svc.Service], secret: str, args: argparse.Namespace, *,
                 tag: str = "compare") -> list[tuple[dict[str, Any], float]]:
    """Every service under its own load process (``segment``), all at once: each one's
    measured window and CPU ms per turn (its CPU over its load process's life, divided by
    every turn it completed, as bench/run.py counts it)."""
    with concurrent.futures.ThreadPoolExecutor(len(services)) as pool:
        runs = [pool.submit(Driver(load_core=LOAD_CORE).run,
                            [segment(service, secret, args, tag=tag)], watch=[service])
                for service in services]
        results = [run.result() for run in runs]
    measured = []
    for service, result in zip(services, results, strict=True):
        [window] = result.segments
        turns = max(1, int(window.get("all_turns") or 0))
        measured.append((window, 1000 * result.cpu_s[service.name] / turns))
    return measured


def run_round(trees: list[Tree], workdir: Path, upstream: svc.Service,
              redis: list[svc.Service], args: argparse.Namespace, number: int) -> None:
    """Every tree's gateway under its own load process, all at once (``load_at_once``)."""
    secret = svc.new_secret()
    started: list[svc.Service] = []
    try:
        for index, (tree, server) in enumerate(zip(trees, redis, strict=True)):
            home = workdir / f"r{number}-t{index}"
            home.mkdir()
            started.append(svc.start_chatgate(home, upstream, server, GATEWAY_CORE,
                                              jwt_secret=secret, source=tree.source,
                                              name=f"chatgate-{index}"))
        for tree, service, (window, cpu_ms) in zip(
                trees, started, load_at_once(started, secret, args), strict=True):
            tree.cpu_ms.append(cpu_ms)
            tree.errors += int(window.get("errors") or 0)
            peak_mib = procstat.peak_rss_bytes(service.pid) / 2**20
            tree.rows.append(
                f"| {number} | {tree.label} | {float(window['turns_per_s']):.1f} | "
                f"{cpu_ms:.3f} | {window['ttft_ms']['50']:.1f} / "
                f"{window['ttft_ms']['99']:.1f} | {window.get('deltas_per_turn', '—')} | "
                f"{peak_mib:.1f} | {window.get('errors')} |")
    finally:
        for service in reversed(started):
            service.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The load and round options (shared with bench/ablate.py)."""
    parser.add_argument("--protocol", choices=("ws", "http"), default="ws")
    parser.add_argument("--concurrency", type=int, default=100, help="streams per tree")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="chat20")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per round")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)


def measure(trees: list[Tree], args: argparse.Namespace) -> None:
    """Every round of every tree (each tree's ``cpu_ms`` and ``rows`` filled in)."""
    with tempfile.TemporaryDirectory(prefix="chatgate-compare-") as tmp:
        workdir = Path(tmp)
        upstream = svc.start_upstream(workdir, LOAD_CORE)
        redis: list[svc.Service] = []
        try:
            svc.set_profile(upstream, **PROFILES[args.profile])
            for index in range(len(trees)):  # one redis-server per tree
                home = workdir / f"redis{index}"
                home.mkdir()
                redis.append(svc.start_redis(home, GATEWAY_CORE))
            for number in range(1, args.rounds + 1):
                run_round(trees, workdir, upstream, redis, args, number)
                print(f"round {number}: " + ", ".join(
                    f"{t.label} {t.cpu_ms[-1]:.3f} ms/turn" for t in trees), flush=True)
        finally:
            for service in [*redis, upstream]:
                service.stop()


def ratios(tree: Tree, base: Tree) -> list[float]:
    """``tree``'s CPU per turn over ``base``'s, per round."""
    return [mine / theirs for mine, theirs in zip(tree.cpu_ms, base.cpu_ms, strict=True)
            if theirs]


def print_rounds(trees: list[Tree], args: argparse.Namespace) -> None:
    print(f"\n## chatgate trees side by side ({args.protocol}, {args.concurrency} streams "
          f"each, {args.profile} upstream {PROFILES[args.profile]}, all on core "
          f"{GATEWAY_CORE} at once)\n")
    print("| round | tree | turns/s | gateway CPU ms/turn | TTFT p50 / p99 ms | "
          "deltas/turn | peak RSS MiB | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for number in range(args.rounds):
        for tree in trees:
            print(tree.rows[number])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="+", metavar="[label=]tree",
                        help="a source directory or a git revision (the first is the base)")
    add_arguments(parser)
    args = parser.parse_args()
    if len(args.trees) < 2:
        parser.error("give at least two trees")
    raise_fd_limit()
    command = shlex.join([".venv/bin/python", "bench/compare.py", *sys.argv[1:]])
    with checked_out(args.trees) as trees:
        measure(trees, args)
    base = trees[0]
    print_rounds(trees, args)
    print(f"\n| tree | median CPU ms/turn | vs {base.label}, per round | median |")
    print("|---|---|---|---|")
    for tree in trees:
        mine = ratios(tree, base)
        print(f"| {tree.label} | {statistics.median(tree.cpu_ms):.3f} | "
              f"{', '.join(f'{r:.3f}' for r in mine)} | {statistics.median(mine):.3f}× |")
    print(f"\nEach tree's gateway CPU per turn over the same window; below 1× is less CPU "
          f"than {base.label}.\nRerun: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
