"""What a turn costs: configured USD prices per one million tokens, per model.

A price of ``X`` USD per 1M tokens is ``X`` micro-dollars per token, so the ledger stores
brand costs as integer micro-dollars (exact sums in Redis); conversions round half to even.
"""

from __future__ import annotations

from gateway.config import Price

MICROS_PER_USD = 1_000_000


def cost_usd(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for one turn; an unknown model (``price`` None) costs 0.0."""
    if price is None:
        return 0.0
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts must be >= 0")
    return (prompt_tokens * price.input + completion_tokens * price.output) / MICROS_PER_USD


def usd_to_micros(usd: float) -> int:
    """Whole micro-dollars, as the ledger stores them."""
    return round(usd * MICROS_PER_USD)


def micros_to_usd(micros: int) -> float:
    return micros / MICROS_PER_USD
