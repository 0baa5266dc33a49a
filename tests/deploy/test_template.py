"""The SAM template: cfn-lint clean, and consistent with the code it deploys."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from memory.warm.dynamodb_items import table_definition

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TEMPLATE = DEPLOY / "template.yaml"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decode = pytest.importorskip("cfnlint.decode", reason="cfn-lint is not installed "
                                 "(pip install -e '.[test]')")
    data, matches = decode.decode(str(TEMPLATE))
    assert not matches, matches
    assert isinstance(data, dict)
    return data


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def test_cfn_lint_passes() -> None:
    api = pytest.importorskip("cfnlint.api", reason="cfn-lint is not installed "
                              "(pip install -e '.[test]')")
    config = api.ManualArgs(regions=["us-east-1", "eu-west-1"])
    matches = api.lint_file(TEMPLATE, config=config)
    assert [str(m) for m in matches] == []


def test_sam_translation_passes_cfn_lint(template: dict[str, Any],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """What CloudFormation will actually run: the template after the SAM transform."""
    translator = pytest.importorskip("samtranslator.translator.transform",
                                     reason="aws-sam-translator is not installed")
    import json

    from cfnlint.api import ManualArgs, lint

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    class Policies:
        def load(self) -> dict[str, str]:
            return {}

    template = json.loads(json.dumps(template))
    template["Globals"]["Function"]["CodeUri"] = "s3://bucket/code.zip"
    out = translator.transform(template, {"VpcId": "vpc-1", "SubnetIds": ["subnet-1"]},
                               Policies())
    assert {"ChatFunctionAliaslive", "ConnectionFunctionAliaslive"} <= set(out["Resources"])
    alias = out["Resources"]["ChatFunctionAliaslive"]["Properties"]
    assert "ProvisionedConcurrencyConfig" in alias
    assert lint(json.dumps(out), config=ManualArgs(regions=["us-east-1"])) == []


def test_table_matches_the_dynamodb_store(template: dict[str, Any]) -> None:
    (table,) = resources(template, "AWS::DynamoDB::Table").values()
    props, expected = table["Properties"], table_definition("T")
    assert props["AttributeDefinitions"] == expected["AttributeDefinitions"]
    assert props["KeySchema"] == expected["KeySchema"]
    got = {i["IndexName"]: (i["KeySchema"], i["Projection"])
           for i in props["GlobalSecondaryIndexes"]}
    assert got == {i["IndexName"]: (i["KeySchema"], i["Projection"])
                   for i in expected["GlobalSecondaryIndexes"]}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert template["Parameters"]["DynamoDbBillingMode"]["Default"] == "PAY_PER_REQUEST"
    scaling = resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    assert scaling and all(p["Condition"] == "UseProvisionedBilling" for p in scaling.values())
    assert {p["Properties"]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"]
            for p in scaling.values()} == {70}


def test_websocket_api_routes_reach_the_handlers(template: dict[str, Any]) -> None:
    (api,) = resources(template, "AWS::ApiGatewayV2::Api").values()
    assert api["Properties"]["ProtocolType"] == "WEBSOCKET"
    routes = {r["Properties"]["RouteKey"] for r in
              resources(template, "AWS::ApiGatewayV2::Route").values()}
    assert routes == {"$connect", "$disconnect", "$default"}
    functions = resources(template, "AWS::Serverless::Function")
    for function in functions.values():
        module, _, name = function["Properties"]["Handler"].rpartition(".")
        assert callable(getattr(importlib.import_module(module), name))
    assert template["Globals"]["Function"]["Runtime"] == "python3.12"
    chat = functions["ChatFunction"]["Properties"]
    assert chat["AutoPublishAlias"] == "live"
    assert "ProvisionedConcurrencyConfig" in chat and "ReservedConcurrentExecutions" in chat
    assert functions["ConnectionFunction"]["Properties"]["SnapStart"] == {
        "ApplyOn": "PublishedVersions"}


def test_chat_turns_are_handed_to_the_chat_alias_once(template: dict[str, Any]) -> None:
    chat = resources(template, "AWS::Serverless::Function")["ChatFunction"]["Properties"]
    target = chat["Environment"]["Variables"]["CHATGATE_TURN_FUNCTION"]["Fn::Sub"]
    assert target == chat["FunctionName"]["Fn::Sub"] + ":" + chat["AutoPublishAlias"]
    assert chat["EventInvokeConfig"]["MaximumRetryAttempts"] == 0
    statements = chat["Policies"][1]["Statement"]
    invoke = next(s for s in statements if s.get("Action") == "lambda:InvokeFunction")
    assert invoke["Resource"]["Fn::Sub"].endswith(":function:" + target)


def test_storage_encryption_and_lifecycle(template: dict[str, Any]) -> None:
    (bucket,) = resources(template, "AWS::S3::Bucket").values()
    props = bucket["Properties"]
    rule = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert all(props["PublicAccessBlockConfiguration"].values())
    transitions = props["LifecycleConfiguration"]["Rules"][0]["Transitions"]
    assert [(t["StorageClass"], t["TransitionInDays"]) for t in transitions] == [
        ("STANDARD_IA", 90), ("GLACIER", 365)]
    (key,) = resources(template, "AWS::KMS::Key").values()
    assert key["Properties"]["EnableKeyRotation"] is True
    assert resources(template, "AWS::ElastiCache::ServerlessCache")


def test_alarms_watch_the_metrics_the_handlers_emit(template: dict[str, Any]) -> None:
    from deploy import metrics

    alarms = resources(template, "AWS::CloudWatch::Alarm")
    custom = {a["Properties"]["MetricName"] for a in alarms.values()
              if a["Properties"]["Namespace"] == "Chatgate"}
    assert custom == {metrics.BUDGET_RATIO, metrics.FIRST_TOKEN_LATENCY}
    assert template["Parameters"]["BudgetAlarmThreshold"]["Default"] == 0.8
    assert template["Parameters"]["LatencyAlarmMs"]["Default"] == 1000
    (dashboard,) = resources(template, "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r'"Chatgate", "(\w+)"|MetricName=\\"(\w+)\\"', body))
    used = {n for pair in names for n in pair if n}
    assert used <= set(metrics.UNITS), used - set(metrics.UNITS)


def test_policies_are_scoped(template: dict[str, Any]) -> None:
    for name, function in resources(template, "AWS::Serverless::Function").items():
        for policy in function["Properties"].get("Policies", []):
            for statement in policy.get("Statement", []):
                if "Fn::If" in statement:
                    statement = statement["Fn::If"][1]
                actions = statement["Action"]
                actions = actions if isinstance(actions, list) else [actions]
                assert all("*" not in a for a in actions), (name, actions)
                assert statement["Resource"] != "*", (name, statement)
    connection = resources(template, "AWS::Serverless::Function")["ConnectionFunction"]
    assert connection["Properties"]["Policies"] == [{"VPCAccessPolicy": {}}]


def test_environment_names_are_the_ones_the_code_reads(template: dict[str, Any]) -> None:
    import deploy.handlers
    import deploy.settings
    import gateway.config
    import memory.cold

    sources = [deploy.handlers, deploy.settings, gateway.config, memory.cold]
    known = {name for module in sources for name in re.findall(
        r"(?:CHATGATE|OPENAI|ANTHROPIC)_[A-Z_]+", Path(str(module.__file__)).read_text())}
    variables = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for function in resources(template, "AWS::Serverless::Function").values():
        variables |= set(function["Properties"].get("Environment", {}).get("Variables", {}))
    assert variables <= known, variables - known


def test_lambda_requirements_are_the_project_dependencies() -> None:
    pyproject = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text("utf-8"))
    lines = (DEPLOY / "requirements.txt").read_text("utf-8").splitlines()
    required = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert required == pyproject["project"]["dependencies"]
