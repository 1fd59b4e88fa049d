"""Which model each WebUI conversation went to (for the resumable stream routes).

Inference requests that carry an `X-Conversation-Id` header are remembered
here by the inference routes; ui/streams.py reads the map to find the child that holds the
conversation's replayable buffer.
"""

from __future__ import annotations

from collections import OrderedDict

from aiohttp import web

CONV_HEADER = "X-Conversation-Id"
MAX_CONVERSATIONS = 4096
MAX_ID_LEN = 512


class ConversationMap:
    """conversation id -> model, the most recent `limit` conversations."""

    def __init__(self, limit: int = MAX_CONVERSATIONS):
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._limit = limit

    def remember(self, conv_id: str, model: str) -> None:
        self._owners[conv_id] = model
        self._owners.move_to_end(conv_id)
        while len(self._owners) > self._limit:
            self._owners.popitem(last=False)

    def owner(self, conv_id: str) -> str | None:
        return self._owners.get(conv_id)

    def forget(self, conv_id: str) -> None:
        self._owners.pop(conv_id, None)

    def remember_request(self, request: web.Request, model: str) -> None:
        """Called for every routed inference request; remembers the conversation it names."""
        conv_id = request.headers.get(CONV_HEADER, "")
        if conv_id and len(conv_id) <= MAX_ID_LEN:
            self.remember(conv_id, model)
