"""One contract for the cold archive, run against S3 (moto, SSE-KMS) and a local folder."""

from __future__ import annotations

import gzip
import re
from datetime import date
from pathlib import Path

import orjson
import pytest

from memory.cold import Archive, open_archive
from memory.cold.base import decode_turns, encode_turns
from memory.cold.s3 import S3Archive
from tests.memory.factories import START, make_turn

DAY = 86400.0
FIRST_DAY = date(2023, 11, 14)  # START is 2023-11-14T22:13:20Z


async def test_turns_round_trip_by_brand_and_day(archive: Archive) -> None:
    turns = [make_turn("c1", at=START, archive=True),
             make_turn("c2", user_id="bob", at=START + 60, archive=True),
             make_turn("c1", at=START + DAY, archive=True),
             make_turn("c9", brand="mindagain", at=START, archive=True)]
    keys = await archive.write(turns)

    assert len(keys) == 3  # one object per brand and day
    layout = re.compile(r"(turns/)?brand=(growain|mindagain)/dt=\d{4}-\d\d-\d\d/[0-9a-f]{32}"
                        r"\.jsonl\.gz")
    assert all(layout.fullmatch(key) for key in keys), keys
    assert await archive.read("growain") == turns[:3]
    assert await archive.read("growain", day=FIRST_DAY) == turns[:2]
    assert await archive.read("growain", user_id="bob") == [turns[1]]
    assert await archive.read("growain", conversation_id="c1") == [turns[0], turns[2]]
    assert await archive.read("mindagain") == [turns[3]]
    assert await archive.read("corefinops") == []


async def test_a_batch_written_twice_reads_once(archive: Archive) -> None:
    turns = [make_turn("c1", at=START + i, archive=True) for i in range(3)]
    await archive.write(turns)
    await archive.write(turns[1:])  # a retried batch: archiving is at least once
    assert await archive.read("growain") == turns


async def test_deleting_a_conversation_rewrites_its_objects(archive: Archive) -> None:
    mine = [make_turn("c1", at=START + i, archive=True) for i in range(3)]
    others = [make_turn("c2", at=START + 10, archive=True),
              make_turn("c1", user_id="bob", at=START + 11, archive=True)]
    await archive.write([mine[0], *others])  # shared with other conversations
    await archive.write(mine[1:])  # only this conversation's lines

    assert await archive.delete_conversation("growain", "alice", "c1") == 3
    assert await archive.read("growain") == others
    assert await archive.delete_conversation("growain", "alice", "c1") == 0


async def test_ensure_bucket_is_idempotent(archive: Archive) -> None:
    await archive.ensure_bucket()
    await archive.write([make_turn(archive=True)])
    await archive.ensure_bucket()
    assert len(await archive.read("growain")) == 1


async def test_s3_objects_are_gzipped_jsonl_encrypted_with_the_kms_key(kms_key_id: str) -> None:
    archive = await open_archive("s3://sse-check/cold", kms_key_id=kms_key_id)
    assert isinstance(archive, S3Archive)
    try:
        await archive.ensure_bucket()
        turns = [make_turn("c1", at=START, archive=True), make_turn("c2", at=START + 1)]
        [key] = await archive.write(turns)
        head = await archive.client.head_object(Bucket="sse-check", Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert kms_key_id in head["SSEKMSKeyId"]
        body = await (await archive.client.get_object(Bucket="sse-check", Key=key))["Body"].read()
        lines = gzip.decompress(body).splitlines()
        assert [orjson.loads(line)["turn_id"] for line in lines] == [t.turn_id for t in turns]

        await archive.delete_conversation("growain", "alice", "c2")  # rewritten, still SSE-KMS
        head = await archive.client.head_object(Bucket="sse-check", Key=key)
        assert head["ServerSideEncryption"] == "aws:kms" and kms_key_id in head["SSEKMSKeyId"]
    finally:
        await archive.aclose()


async def test_an_empty_url_turns_archiving_off() -> None:
    assert await open_archive("") is None
    with pytest.raises(ValueError, match="unsupported archive URL"):
        await open_archive("ftp://nowhere")


async def test_a_relative_file_url_is_created_under_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    archive = await open_archive("file://./.chatgate/archive")
    assert archive is not None
    [key] = await archive.write([make_turn(archive=True)])
    assert (tmp_path / ".chatgate" / "archive" / key).is_file()


def test_encoding_is_gzipped_json_lines() -> None:
    turns = [make_turn("c1", text="ünïcode ✓\nnewline"), make_turn("c2")]
    data = encode_turns(turns)
    assert gzip.decompress(data).count(b"\n") == 2
    assert decode_turns(data) == turns
