"""Cold archive in a local folder (``file:///PATH``): the S3 layout, on disk.

Files are written to a temporary name and renamed into place, so a reader never sees a
half-written object. File I/O runs in worker threads; deletes (read, filter, rewrite) are
serialised by a lock within the process.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from memory.cold.base import (
    brand_prefix,
    decode_turns,
    encode_turns,
    matches,
    object_key,
    partitions,
    unique_sorted,
    without_conversation,
)
from memory.records import TurnRecord


def archive_root(url: str) -> Path:
    """``file:///abs/path`` or ``file://./relative/path`` → the folder."""
    if not url.startswith("file://"):
        raise ValueError(f"not a file URL (file:///PATH): {url!r}")
    path = url.removeprefix("file://")
    if not path:
        raise ValueError(f"file URL without a path: {url!r}")
    return Path(path)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class FileArchive:
    """:class:`~memory.cold.base.Archive` under a local folder."""

    def __init__(self, root: Path | str, *, prefix: str = "") -> None:
        self.root = Path(root)
        self.prefix = prefix
        self._delete_lock = asyncio.Lock()

    async def ensure_bucket(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def write(self, turns: Sequence[TurnRecord]) -> list[str]:
        """One file per (brand, day) of ``turns``; returns their keys."""
        batches = {object_key(self.prefix, p): group for p, group in partitions(turns).items()}

        def write_all() -> None:
            for key, group in batches.items():
                _write_atomically(self.root / key, encode_turns(group))

        await asyncio.to_thread(write_all)
        return list(batches)

    def _files(self, brand: str, day: date | None) -> list[Path]:
        folder = self.root / brand_prefix(self.prefix, brand, day)
        return sorted(folder.rglob("*.jsonl.gz")) if folder.is_dir() else []

    async def read(self, brand: str, *, day: date | None = None, user_id: str | None = None,
                   conversation_id: str | None = None) -> list[TurnRecord]:
        """The brand's archived turns (of a day, user, conversation), oldest first."""
        def read_all() -> list[TurnRecord]:
            return [t for path in self._files(brand, day) for t in decode_turns(path.read_bytes())
                    if matches(t, user_id, conversation_id)]

        return unique_sorted(await asyncio.to_thread(read_all))

    async def delete_conversation(self, brand: str, user_id: str, conversation_id: str) -> int:
        """Rewrite the brand's files without the conversation's lines; returns lines removed."""
        def delete() -> int:
            removed = 0
            for path in self._files(brand, None):
                turns = decode_turns(path.read_bytes())
                kept = without_conversation(turns, user_id, conversation_id)
                removed += len(turns) - len(kept)
                if not kept:
                    path.unlink()
                elif len(kept) < len(turns):
                    _write_atomically(path, encode_turns(kept))
            return removed

        async with self._delete_lock:
            return await asyncio.to_thread(delete)

    async def aclose(self) -> None:
        return None
