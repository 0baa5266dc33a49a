"""One aioboto3 client held open for its owner's lifetime (``start`` … ``aclose``).

Shared by the DynamoDB history and the S3 archive: credentials and endpoints come from
the standard AWS chain (``AWS_ENDPOINT_URL`` etc.), region and endpoint from the owner.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import aioboto3
from botocore.exceptions import ClientError


def error_code(exc: ClientError) -> str:
    """The AWS error code of a botocore ClientError ('' if none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


class HeldClient:
    def __init__(self, service: str, *, region: str, endpoint_url: str | None,
                 owner: str) -> None:
        self._service = service
        self._region = region
        self._endpoint_url = endpoint_url
        self._owner = owner
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    async def start(self) -> None:
        if self._client is None:
            stack = AsyncExitStack()
            self._client = await stack.enter_async_context(aioboto3.Session().client(
                self._service, region_name=self._region, endpoint_url=self._endpoint_url))
            self._stack = stack

    async def aclose(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError(f"{self._owner} used before start() or after aclose()")
        return self._client
