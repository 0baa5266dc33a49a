"""Garbage collection tuned for serving: the startup heap frozen, young collections rarer.

A turn allocates thousands of short-lived objects (events, frames, dicts, futures), and
reference counting frees almost all of them the moment they are done with. CPython's
cyclic collector still runs every 700 net allocations and walks every tracked object of
the generations it collects; the older ones hold everything built at startup (the config,
the SDK clients and their pydantic models, the token encoder, every imported module), so
each of their collections walks that whole heap again, to find nothing.

So a serving process, once it has built what it keeps for its lifetime, freezes that heap
(``gc.freeze``: those objects are never walked again; reference counting still frees
them) and collects its youngest generation every :data:`YOUNG_THRESHOLD` net allocations
instead of 700. Cyclic garbage is still collected, a little later: at most that many
objects wait for it. Measured side by side (``bench/compare.py``, 100 WebSocket streams
per gateway, 3 rounds), the default collector cost about 12 % of a turn's CPU (a copy with
it disabled: 0.88×); freezing took back about half of that, the threshold most of the rest
(0.89 to 0.92× the CPU per turn of the default, over two runs).

On Lambda this runs in the first invocation of an execution environment (the gateway
opens lazily): its full collection adds to that invocation once, not to later ones.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # net allocations between young collections (CPython: 700)


def tune_for_serving() -> None:
    """Freeze the heap built so far and space out young collections. Call once, after
    startup (config loaded, clients and runtime open), before serving."""
    gc.collect()  # what startup left as garbage goes now, not into the frozen heap
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
