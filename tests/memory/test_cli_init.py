"""`chatgate init` creates the configured DynamoDB table and S3 bucket (idempotently)."""

from __future__ import annotations

import boto3
import pytest

from gateway.cli import main
from tests.memory.conftest import unique_name


def test_init_creates_table_and_bucket_and_is_idempotent(
        aws: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    table, bucket = unique_name("cg-table"), unique_name("cg-bucket")
    monkeypatch.setenv("CHATGATE_HISTORY_URL", f"dynamodb://{table}")
    monkeypatch.setenv("CHATGATE_ARCHIVE_URL", f"s3://{bucket}/archive")
    assert main(["init"]) == 0
    assert main(["init"]) == 0  # a second run changes nothing and does not fail
    out = capsys.readouterr().out
    assert out.count("history ready") == 2 and out.count("archive ready") == 2
    dynamodb = boto3.client("dynamodb", endpoint_url=aws, region_name="us-east-1")
    description = dynamodb.describe_table(TableName=table)["Table"]
    assert {i["IndexName"] for i in description.get("GlobalSecondaryIndexes", [])}
    ttl = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "ttl"
    s3 = boto3.client("s3", endpoint_url=aws, region_name="us-east-1")
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
