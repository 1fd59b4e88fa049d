"""A tiny publish/subscribe bus for model state changes (feeds /models/sse)."""

from __future__ import annotations

import asyncio
import time
from typing import Any


class EventBus:
    def __init__(self, queue_size: int = 1000):
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._queue_size = queue_size

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._queue_size)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(q)

    @property
    def listened(self) -> bool:
        """Whether anyone subscribed: an event nobody reads need not be built."""
        return bool(self._subscribers)

    def emit(self, model: str, event: str, data: dict[str, Any]) -> None:
        message = {"model": model, "event": event, "data": data, "time": time.time()}
        for q in list(self._subscribers):
            try:
                q.put_nowait(message)
            except asyncio.QueueFull:
                # A subscriber that stopped reading must not stall the router.
                self._subscribers.discard(q)
