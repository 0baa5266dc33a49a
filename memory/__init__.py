"""Tiered conversation memory: hot Redis, warm history, cold archive, context assembly."""
