"""Where a turn's frames go. The service only knows this Protocol."""

from __future__ import annotations

from typing import Protocol

from gateway.frames import ServerFrame


class SinkClosed(Exception):
    """The client is gone (socket closed, API Gateway said GoneException)."""


class Sink(Protocol):
    async def send(self, frame: ServerFrame) -> None:
        """Deliver one frame, waiting while the client's queue is full; raise SinkClosed."""
        ...
