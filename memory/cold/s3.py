"""Cold archive on S3 (``s3://BUCKET/PREFIX``): gzipped JSON Lines, SSE-KMS.

Every object is written with ``ServerSideEncryption="aws:kms"``, and with ``SSEKMSKeyId``
when a key is configured (``CHATGATE_ARCHIVE_KMS_KEY_ID``; otherwise the account's
``aws/s3`` key). New objects use ``IfNoneMatch="*"`` (never overwrite); deleting a
conversation rewrites the affected objects with ``IfMatch`` on the ETag that was read, so
two concurrent deletes in one object cannot undo each other (the loser re-reads and
retries). The storage classes over time (Standard-IA at 90 days, Glacier at 365) are the
bucket's lifecycle rules in the deploy template.

One aioboto3 client is kept open from :meth:`S3Archive.start` to :meth:`S3Archive.aclose`;
credentials and endpoint come from the standard AWS chain (``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import date
from typing import Any

from botocore.exceptions import ClientError

from memory.aws import HeldClient, error_code
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

REWRITE_ATTEMPTS = 5
CONCURRENT_GETS = 8


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` → (bucket, prefix)."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an S3 URL (s3://BUCKET/PREFIX): {url!r}")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"S3 URL without a bucket: {url!r}")
    return bucket, prefix.strip("/")


class S3Archive:
    """:class:`~memory.cold.base.Archive` in one S3 bucket."""

    def __init__(self, bucket: str, *, prefix: str = "", kms_key_id: str | None = None,
                 region: str = "us-east-1", endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.kms_key_id = kms_key_id or None
        self._region = region
        self._held = HeldClient("s3", region=region, endpoint_url=endpoint_url,
                                owner="S3Archive")

    async def start(self) -> S3Archive:
        await self._held.start()
        return self

    async def aclose(self) -> None:
        await self._held.aclose()

    @property
    def client(self) -> Any:
        return self._held.client

    async def ensure_bucket(self) -> None:
        """Create the bucket when missing (idempotent)."""
        options: dict[str, Any] = {"Bucket": self.bucket}
        if self._region != "us-east-1":
            options["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            await self.client.create_bucket(**options)
        except ClientError as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def _encryption(self) -> dict[str, str]:
        options = {"ServerSideEncryption": "aws:kms"}
        if self.kms_key_id:
            options["SSEKMSKeyId"] = self.kms_key_id
        return options

    async def _put(self, key: str, body: bytes, **condition: str) -> None:
        await self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                     ContentType="application/x-ndjson", **self._encryption(),
                                     **condition)

    async def write(self, turns: Sequence[TurnRecord]) -> list[str]:
        """One object per (brand, day) of ``turns``; returns their keys."""
        keys = []
        for partition, group in partitions(turns).items():
            key = object_key(self.prefix, partition)
            await self._put(key, encode_turns(group), IfNoneMatch="*")
            keys.append(key)
        return keys

    async def keys(self, brand: str, day: date | None = None) -> AsyncIterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=brand_prefix(self.prefix, brand, day))
        async for page in pages:
            for entry in page.get("Contents", []):
                if entry["Key"].endswith(".jsonl.gz"):
                    yield entry["Key"]

    async def _get(self, key: str) -> tuple[list[TurnRecord], str]:
        """The object's turns and ETag; none if it was deleted since it was listed."""
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) == "NoSuchKey":
                return [], ""
            raise
        async with response["Body"] as body:
            data = await body.read()
        return decode_turns(data), str(response["ETag"])

    async def read(self, brand: str, *, day: date | None = None, user_id: str | None = None,
                   conversation_id: str | None = None) -> list[TurnRecord]:
        """The brand's archived turns (of a day, user, conversation), oldest first."""
        limiter = asyncio.Semaphore(CONCURRENT_GETS)

        async def fetch(key: str) -> list[TurnRecord]:
            async with limiter:
                turns, _ = await self._get(key)
            return [t for t in turns if matches(t, user_id, conversation_id)]

        keys = [key async for key in self.keys(brand, day)]
        batches = await asyncio.gather(*(fetch(key) for key in keys))
        return unique_sorted(t for batch in batches for t in batch)

    async def delete_conversation(self, brand: str, user_id: str, conversation_id: str) -> int:
        """Rewrite the brand's objects without the conversation's lines; returns lines removed.

        This lists and reads every object of the brand: an admin operation, not a hot path.
        """
        removed = 0
        keys = [key async for key in self.keys(brand)]
        for key in keys:
            removed += await self._delete_from(key, user_id, conversation_id)
        return removed

    async def _delete_from(self, key: str, user_id: str, conversation_id: str) -> int:
        for _ in range(REWRITE_ATTEMPTS):
            turns, etag = await self._get(key)
            kept = without_conversation(turns, user_id, conversation_id)
            if len(kept) == len(turns):
                return 0
            try:
                if kept:
                    await self._put(key, encode_turns(kept), IfMatch=etag)
                else:
                    await self.client.delete_object(Bucket=self.bucket, Key=key)
                return len(turns) - len(kept)
            except ClientError as exc:
                if error_code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise
        raise RuntimeError(f"s3://{self.bucket}/{key} kept changing while deleting from it")
