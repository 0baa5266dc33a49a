"""Load the Lua scripts in ``budgets/lua``; register the ledger's on an auto-pipeline.

Scripts run by SHA through :class:`memory.pipelining.AutoPipeline` (``EVALSHA``, reloaded
on ``NOSCRIPT``; concurrent calls share pipelined round trips). ``reserve``, ``settle``
and ``read`` share the lease-releasing prelude ``leases.lua``, prepended to their text
here, since Redis scripts cannot include one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from redis.commands.core import AsyncScript

from memory.pipelining import AutoPipeline

PRELUDE = "leases.lua"


@cache
def script_source(name: str, *, with_prelude: bool = False) -> str:
    """The text of ``budgets/lua/<name>``, after the shared prelude when asked."""
    folder = resources.files("budgets").joinpath("lua")
    text = folder.joinpath(name).read_text("utf-8")
    if with_prelude:
        return folder.joinpath(PRELUDE).read_text("utf-8") + "\n" + text
    return text


@dataclass(frozen=True, slots=True)
class LedgerScripts:
    """The budget ledger's scripts, registered on one auto-pipeline."""

    reserve: AsyncScript
    settle: AsyncScript
    read: AsyncScript

    @classmethod
    def register(cls, runner: AutoPipeline) -> LedgerScripts:
        return cls(
            reserve=runner.register(script_source("reserve.lua", with_prelude=True)),
            settle=runner.register(script_source("settle.lua", with_prelude=True)),
            read=runner.register(script_source("read.lua", with_prelude=True)),
        )
