"""Random ids (conversations, turns, lock tokens): 128 bits from the OS's CSPRNG, as hex.

``secrets.token_hex`` asks the kernel (``getrandom``) for every id; on a busy gateway that
is three system calls a turn, and on virtual machines a system call is not cheap. Here the
bytes are drawn 4 KiB at a time and handed out 16 at a time: the same source and the same
unpredictability, one system call per 256 ids. A forked child starts with a fresh buffer,
so parent and child never hand out the same bytes.
"""

from __future__ import annotations

import os

_BATCH = 4096


class _RandomBytes:
    __slots__ = ("_at", "_buffer")

    def __init__(self) -> None:
        self._buffer = b""
        self._at = 0

    def take(self, size: int) -> bytes:
        at = self._at
        if at + size > len(self._buffer):
            self._buffer, at = os.urandom(max(_BATCH, size)), 0
        self._at = at + size
        return self._buffer[at:at + size]

    def reset(self) -> None:
        self._buffer, self._at = b"", 0


_SOURCE = _RandomBytes()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_SOURCE.reset)


def random_hex(nbytes: int = 16) -> str:
    """``nbytes`` random bytes as ``2 * nbytes`` lowercase hex digits (``secrets.token_hex``)."""
    return _SOURCE.take(nbytes).hex()
