"""chatgate: a multi-tenant, stateful AI chat gateway."""

__version__ = "0.1.0"
