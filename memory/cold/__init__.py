"""Cold archive (S3 or a local folder) behind :class:`Archive`, chosen by URL.

``await open_archive(url)`` returns a started archive, or ``None`` when the URL is empty
(archiving off); close it with ``await archive.aclose()``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from memory.cold.base import Archive

__all__ = ["Archive", "open_archive"]

KMS_KEY_ENV = "CHATGATE_ARCHIVE_KMS_KEY_ID"


async def open_archive(url: str | None, *, env: Mapping[str, str] | None = None,
                       kms_key_id: str | None = None) -> Archive | None:
    """A started archive for ``s3://BUCKET/PREFIX`` or ``file:///PATH``; None if ``url`` is empty.

    The S3 bucket is created by ``ensure_bucket()`` (``chatgate init``), not here; the KMS key
    is ``kms_key_id`` or ``$CHATGATE_ARCHIVE_KMS_KEY_ID``.
    """
    env = os.environ if env is None else env
    if not url:
        return None
    if url.startswith("s3://"):
        from memory.cold.s3 import S3Archive, parse_s3_url
        from memory.warm import aws_region

        bucket, prefix = parse_s3_url(url)
        archive = S3Archive(bucket, prefix=prefix, region=aws_region(env),
                            kms_key_id=kms_key_id or env.get(KMS_KEY_ENV))
        return await archive.start()
    if url.startswith("file://"):
        from memory.cold.files import FileArchive, archive_root

        files = FileArchive(archive_root(url))
        await files.ensure_bucket()
        return files
    raise ValueError(f"unsupported archive URL {url!r} (s3://BUCKET/PREFIX or file:///PATH)")
