"""Pytest fixtures starting the fake providers on free loopback ports.

Use them from a ``conftest.py`` by importing the names::

    from tests.fakes.fixtures import anthropic_fake, bedrock_fake, openai_fake  # noqa: F401

Each yields a started :class:`tests.fakes.upstream.FakeUpstream` (``.url``, ``.script()``,
``.default``, ``.requests``, ``.wait_for_requests()``, ``.wait_for_disconnect()``).
``aws_test_env`` sets dummy AWS credentials and region (and turns off the instance
metadata lookup) for aioboto3. ``tests.fakes.providers`` builds real providers against
the fakes (``provider_for``) or the config options that point at them (``options_for``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.anthropic_server import anthropic_fake as _anthropic
from tests.fakes.bedrock_server import bedrock_fake as _bedrock
from tests.fakes.openai_server import openai_fake as _openai
from tests.fakes.upstream import FakeUpstream, serve

AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing", "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeUpstream]:
    async with serve(_openai()) as fake:
        yield fake


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeUpstream]:
    async with serve(_anthropic()) as fake:
        yield fake


@pytest.fixture
async def bedrock_fake() -> AsyncIterator[FakeUpstream]:
    async with serve(_bedrock()) as fake:
        yield fake


@pytest.fixture
def aws_test_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    return dict(AWS_TEST_ENV)
