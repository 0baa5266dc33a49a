from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.fixtures import (  # noqa: F401
    anthropic_fake,
    aws_test_env,
    bedrock_fake,
    openai_fake,
)
from tests.fakes.providers import FAKES
from tests.fakes.upstream import FakeUpstream, serve

KINDS = ("openai", "anthropic", "bedrock")


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
async def fake(kind: str) -> AsyncIterator[FakeUpstream]:
    """The fake server speaking ``kind``'s wire format."""
    async with serve(FAKES[kind]()) as upstream:
        yield upstream

