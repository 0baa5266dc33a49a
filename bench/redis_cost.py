"""What the budget scripts cost Redis: instructions a reserve + settle pair, counted, not timed.

    .venv/bin/python bench/redis_cost.py HEAD~1 .          # a revision against the tree
    .venv/bin/python bench/redis_cost.py . --pairs 4000

Timing a Lua script on this machine drifts with it (±20 % within minutes); counting the
instructions redis-server executes does not. For each source tree (a directory holding
chatgate's packages, or a git revision, as bench/compare.py takes them), a redis-server
runs under valgrind's callgrind, and that tree's own ``BudgetLedger`` (its scripts and
its arguments, on the runtime's auto-pipeline) drives it the way the gateway does: 50
turns at a time, each user with one turn in flight, a new conversation each turn,
finite limits on all four scopes (as the benchmark's config has them), reserve then
settle. Each tree runs twice, with no pairs and with ``--pairs``; the difference divided
by the pairs is what one pair costs the server (its network reads and writes included).
Needs valgrind; for a given redis-server build the counts repeat to within about half a
percent (the order in which the server reads the pipelined calls varies a little).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import services as svc
from compare import checked_out

# Run inside a tree (PYTHONPATH): ``pairs`` reserve + settle pairs against the server at
# argv[1], 50 turns at a time, as the gateway makes them.
DRIVER = """
import asyncio, sys
from budgets import BudgetLedger, BudgetLimits, ReservationRequest
from memory.pipelining import AutoPipeline
from memory.redis_client import connect_pipeline_client

LIMITS = BudgetLimits(user_day=10**12, user_month=10**12, brand_month=10**12,
                      conversation=10**9)
AT_ONCE = 50

async def main(url, pairs):
    client = connect_pipeline_client(url)
    ledger = BudgetLedger(client, pipeline=AutoPipeline(client, hold_connection=True))

    async def turn(i):
        request = f"{i:08x}"
        await ledger.reserve(ReservationRequest(
            brand="bench", user_id=f"u{i % AT_ONCE}", conversation_id=request,
            request_id=request, tokens=300, limits=LIMITS))
        assert await ledger.settle(brand="bench", request_id=request, actual_tokens=250,
                                   cost_usd=0.0001)

    await turn(10**7)  # scripts loaded, connection open: in both runs
    for start in range(0, pairs, AT_ONCE):
        await asyncio.gather(*(turn(i) for i in range(start, min(pairs, start + AT_ONCE))))
    await client.aclose()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def instructions(tree: Path, pairs: int, python: str) -> int:
    """redis-server's instructions, start to stop, with ``pairs`` pairs driven."""
    with tempfile.TemporaryDirectory(prefix="chatgate-redis-cost-") as tmp:
        workdir = Path(tmp)
        out = workdir / "callgrind.out"
        server = svc.start_redis(workdir, None, timeout_s=60, wrapper=[
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
        try:
            # Run from the temporary directory: ``python -c`` puts the working directory
            # first on its path, ahead of PYTHONPATH, and this checkout's packages with it.
            subprocess.run([python, "-c", DRIVER, f"redis://127.0.0.1:{server.port}/0",
                            str(pairs)], check=True, cwd=workdir,
                           env={**os.environ, "PYTHONPATH": str(tree)})
        finally:
            server.stop()  # SIGTERM: redis-server exits, and callgrind writes its counts
        for line in out.read_text().splitlines() if out.exists() else ():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
        raise SystemExit(f"no instruction count from callgrind; its log:\n{server.log_tail()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="+", metavar="[label=]tree",
                        help="a source directory or a git revision (the first is the base)")
    parser.add_argument("--pairs", type=int, default=2000)
    args = parser.parse_args()
    for tool in ("valgrind", "redis-server"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: bench/redis_cost.py needs valgrind and Debian's "
                  f"redis-server", file=sys.stderr)
            return 2
    venv_python = svc.ROOT / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    with checked_out(args.trees) as trees:
        costs = []
        for tree in trees:
            idle = instructions(tree.source, 0, python)
            busy = instructions(tree.source, args.pairs, python)
            costs.append((tree.label, (busy - idle) / args.pairs))
            print(f"{tree.label}: {costs[-1][1]:,.0f} instructions a pair", flush=True)
    base = costs[0][1]
    print(f"\n| tree | redis-server instructions a reserve + settle pair | vs {costs[0][0]} |")
    print("|---|---|---|")
    for label, cost in costs:
        print(f"| {label} | {cost:,.0f} | {cost / base:.3f}× |")
    print(f"\n{args.pairs} pairs, 50 at a time, counted by callgrind (they repeat to "
          f"within about half a percent).\nRerun: "
          f"{shlex.join(['.venv/bin/python', 'bench/redis_cost.py', *sys.argv[1:]])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
