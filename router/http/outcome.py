"""The status a relayed request ended with, as its metrics and activity record it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from router.http.errors import HTTPError

CLIENT_LEFT = 499  # the status recorded for a request whose client went away before its reply's end


class Outcome:
    """The status a relayed request ended with, for its metrics: what the client got
    (forward() records it in `stats`, else the reply's), an HTTPError's, or CLIENT_LEFT for a
    client that left after the last byte had its reply.

        outcome = Outcome(stats)
        try:
            with outcome:
                return outcome.served(await relay())
        finally:
            record(outcome.status)
    """

    __slots__ = ("stats", "status")

    def __init__(self, stats: Mapping[str, Any]) -> None:
        self.stats, self.status = stats, 500

    def served(self, resp: web.StreamResponse) -> web.StreamResponse:
        self.status = self.stats.get("status", resp.status)
        return resp

    def __enter__(self) -> Outcome:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, HTTPError):
            self.status = exc.status
        elif isinstance(exc, asyncio.CancelledError):
            self.status = self.stats.get("status", CLIENT_LEFT)
