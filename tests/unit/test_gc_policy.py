"""The serving GC policy, in a process of its own (it changes process-wide state)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from gateway.gc_policy import YOUNG_THRESHOLD

_CHECK = textwrap.dedent("""
    import gc, json, weakref

    from gateway.gc_policy import tune_for_serving

    kept = [[object()] for _ in range(1000)]  # startup state, lives for good
    before = gc.get_threshold()
    tune_for_serving()
    frozen = gc.get_freeze_count()

    class Node:
        pass

    collected = []
    for _ in range(50):  # cycles that only the cyclic collector can free
        a, b = Node(), Node()
        a.other, b.other = b, a
        weakref.finalize(a, collected.append, 1)
        del a, b
    churn = [[] for _ in range(3 * gc.get_threshold()[0])]  # allocations, to trigger it
    del churn
    print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": frozen,
                      "collected": len(collected)}))
""")


def test_tuning_freezes_the_startup_heap_and_still_collects_cycles() -> None:
    out = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    seen = json.loads(out)
    assert seen["after"] == [YOUNG_THRESHOLD, *seen["before"][1:]]
    assert seen["frozen"] >= 1000  # at least the startup lists above
    assert seen["collected"] == 50  # young cycles are still freed, without gc.collect()
