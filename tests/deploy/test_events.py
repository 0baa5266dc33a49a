"""Event shapes, settings and metric lines: pure functions."""

from __future__ import annotations

import base64
import io

import orjson
import pytest

from deploy.events import (
    ConnectionInfo,
    MalformedEvent,
    bearer_token,
    connect_event,
    disconnect_event,
    is_warmup,
    message_body,
    message_event,
    new_connection_id,
    request_context,
)
from deploy.lambda_gateway import read_frame
from deploy.metrics import emf_document, turn_values, write_emf
from deploy.settings import LambdaSettings, SettingsError
from gateway.config import Limits
from gateway.frames import ChatFrame, DoneFrame, FrameError

INFO = ConnectionInfo(connection_id="abc=", domain_name="x.execute-api.eu-west-1.amazonaws.com",
                      stage="prod", source_ip="10.0.0.1", user_agent="ua", connected_at_ms=1)


def test_built_events_read_back() -> None:
    connect = connect_event(INFO, headers={"Authorization": "Bearer T1"}, query={"token": "T2"})
    context = request_context(connect)
    assert (context.route_key, context.event_type, context.connection_id, context.stage) == (
        "$connect", "CONNECT", "abc=", "prod")
    assert bearer_token(connect) == "T1"  # the header wins, as on the aiohttp transport
    assert request_context(disconnect_event(INFO, status_code=1001)).event_type == "DISCONNECT"
    message = message_event(INFO, '{"type":"ping"}')
    assert request_context(message).route_key == "$default"
    assert message_body(message) == ('{"type":"ping"}', False)
    assert message_body(message_event(INFO, b"\x00\x01")) == (b"\x00\x01", True)


def test_token_sources() -> None:
    assert bearer_token({"headers": {"authorization": "bearer  abc "}}) == "abc"
    assert bearer_token({"queryStringParameters": {"token": "q"}}) == "q"
    assert bearer_token({"headers": {"Authorization": "Basic x"},
                         "queryStringParameters": None}) is None


def test_route_key_without_event_type_is_inferred() -> None:
    event = {"requestContext": {"routeKey": "chat", "connectionId": "c", "domainName": "d",
                                "stage": "s"}}
    assert request_context(event).event_type == "MESSAGE"
    with pytest.raises(MalformedEvent):
        request_context({"requestContext": {"routeKey": "$default"}})
    with pytest.raises(MalformedEvent):
        message_body({"body": "!!", "isBase64Encoded": True})


@pytest.mark.parametrize(("event", "warm"), [
    ({"warmup": True}, True),
    ({"source": "aws.events", "detail-type": "Scheduled Event"}, True),
    ({"warmup": "yes"}, False),
    ({"source": "aws.events", "requestContext": {}}, False),
    ({}, False),
])
def test_warmup_detection(event: dict[str, object], warm: bool) -> None:
    assert is_warmup(event) is warm


def test_connection_ids_look_like_api_gateways() -> None:
    ids = {new_connection_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 16 and i.endswith("=") for i in ids)


def test_read_frame_applies_the_socket_rules() -> None:
    limits = Limits(max_frame_bytes=300)
    assert isinstance(read_frame('{"type":"chat","id":"a","content":"hi"}', binary=False,
                                 limits=limits), ChatFrame)
    with pytest.raises(FrameError, match="binary"):
        read_frame(b'{"type":"ping"}', binary=True, limits=limits)
    with pytest.raises(FrameError, match="larger than 300"):
        read_frame('{"type":"chat","id":"a","content":"' + "é" * 140 + '"}', binary=False,
                   limits=limits)


def test_settings_from_env() -> None:
    settings = LambdaSettings.from_env({"CHATGATE_COALESCE_BYTES": "512",
                                        "AWS_LAMBDA_FUNCTION_NAME": "f",
                                        "AWS_REGION": "eu-west-1"})
    assert (settings.coalesce_bytes, settings.region, settings.emf_namespace) == (
        512, "eu-west-1", "Chatgate")
    assert settings.management_endpoint(domain_name="d.example", stage="prod") == (
        "https://d.example/prod")
    local = settings.for_local_emulator()
    assert local.management_endpoint(domain_name="127.0.0.1:9", stage="local") == (
        "http://127.0.0.1:9/local")
    assert local.credentials is not None and local.emf_namespace == ""
    with pytest.raises(SettingsError, match="CHATGATE_CANCEL_POLL_MS"):
        LambdaSettings.from_env({"CHATGATE_CANCEL_POLL_MS": "soon"})


def test_emf_line_carries_the_done_frame_figures() -> None:
    done = DoneFrame("c", "conv", {"prompt_tokens": 10, "completion_tokens": 5,
                                   "total_tokens": 15}, 0.1, True, "stop",
                     {"first_token": 12.5, "total": 40.0})
    values = turn_values(outcome="stop", done=done, budget_ratio=0.81)
    document = emf_document("Chatgate", "growain", values, timestamp_ms=5)
    out = io.StringIO()
    write_emf(document, out)
    line = orjson.loads(out.getvalue())
    assert line["Brand"] == "growain" and line["CacheHits"] == 1 and line["Errors"] == 0
    assert line["TurnLatency"] == 40.0 and line["BrandBudgetUsedRatio"] == 0.81
    metrics = line["_aws"]["CloudWatchMetrics"][0]
    assert metrics["Dimensions"] == [["Brand"], []]
    assert {m["Name"] for m in metrics["Metrics"]} == set(values)
    failed = turn_values(outcome="provider_error", done=None, budget_ratio=None)
    assert failed == {"Turns": 1, "Errors": 1, "ClientGone": 0}


def test_base64_bodies() -> None:
    body = base64.b64encode(b"hi").decode()
    assert message_body({"body": body, "isBase64Encoded": True}) == (b"hi", True)
    assert message_body({}) == ("", False)
