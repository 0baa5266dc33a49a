"""Token budgets and rate limits: Redis Lua scripts and the thin Python that calls them."""
