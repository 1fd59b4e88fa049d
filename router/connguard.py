"""Slow and greedy clients, stopped at the connection.

aiohttp waits for a request's headers as long as a client takes to send them,
and lets one address open as many connections as it likes: a slow-headers
client (slowloris) or a runaway script can hold every file descriptor the
router has. `GuardedRunner` is aiohttp's AppRunner with a connection guard:

- a client must finish a request's headers within `router.header_timeout`
  seconds of its first byte (of the connection, or of a new request on a
  kept-alive one), else it gets 408 and the connection is closed;
- one address holds at most `router.max_client_connections` connections at
  once (0: no cap); the next one gets 429 and is closed at once.

Bodies are bounded by `router.body_timeout` where the body is read
(http/request.py). aiohttp has no hook for this, so the guard wraps the
request-handler factory aiohttp's runner hands to the listening socket
(`Server.__call__`): the one place every connection passes through.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

log = logging.getLogger("router.connguard")


def _refusal(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


class ConnectionGuard:
    """Counts connections per address; knows the limits."""

    def __init__(self, header_timeout: float, max_per_address: int):
        self.header_timeout = header_timeout
        self.max_per_address = max_per_address
        self.open: Counter[str] = Counter()

    def admit(self, address: str) -> bool:
        if self.max_per_address and self.open[address] >= self.max_per_address:
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


class GuardedHandler(RequestHandler):
    """aiohttp's request handler, with the guard's two checks."""

    guard: ConnectionGuard  # set on the subclass made per runner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self._admitted = self.guard.admit(self._address)
        self._header_timer: asyncio.TimerHandle | None = None
        if not self._admitted:
            log.warning("refused a connection from %s: %d already open (router.max_client_connections)",
                        self._address, self.guard.max_per_address)
            self._refuse(429, "Too Many Requests", f"too many connections from {self._address} "
                         f"(limit {self.guard.max_per_address}, router.max_client_connections)",
                         "too_many_connections")
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._disarm()  # a whole header block arrived
        elif self._header_timer is None and not self._request_in_progress and not self._messages:
            self._arm()  # the first bytes of the next request on a kept-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if getattr(self, "_admitted", False):
            self._admitted = False
            self.guard.release(self._address)
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self.guard.header_timeout > 0:
            self._header_timer = asyncio.get_running_loop().call_later(
                self.guard.header_timeout, self._headers_late, self._request_count)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self, count: int) -> None:
        self._header_timer = None
        if self._request_count == count and not self._request_in_progress:
            log.info("closed a connection from %s: request headers not received within %g s "
                     "(router.header_timeout)", self._address, self.guard.header_timeout)
            self._refuse(408, "Request Timeout", f"request headers not received within "
                         f"{self.guard.header_timeout:g} s", "request_timeout")

    def _refuse(self, status: int, reason: str, message: str, code: str) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_refusal(status, reason, message, code))
            transport.close()
        self.force_close()


class _GuardedServer:
    """aiohttp's Server, handing out GuardedHandlers (everything else delegated)."""

    def __init__(self, server: Server, handler: type[GuardedHandler]):
        self._server = server
        self._handler = handler

    def __call__(self) -> RequestHandler:
        return self._handler(self._server, loop=self._server._loop, **self._server._kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class GuardedRunner(web.AppRunner):
    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any):
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        handler = type("GuardedHandler", (GuardedHandler,), {"guard": self.guard})
        return _GuardedServer(server, handler)  # type: ignore[return-value]
