"""A lean HTTP/1.1 client for the router's light requests to its children.

/tokenize, /props, /slots and the like take none of a child's slots and are
answered in microseconds: there the client's own cost is most of what the
router adds. aiohttp's client spends about 85 us of CPU per request on the
bench machine (its connector, cookie jar, tracing hooks, URL and header
objects); writing the request as one buffer and reading the reply with
httptools (llhttp, the parser of Node.js) costs about 20. Replies are read
whole: light endpoints never stream.

Connections are kept alive, at most `per_child` at once per child (an open
connection holds one of llama-server's few HTTP threads; the others wait
here, in order), and closed after `keepalive_s` idle, below llama-server's
own 5 s. A request sent on a kept-alive connection that the child had
closed meanwhile is sent once more on a new one: light requests are
idempotent.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote

import httptools


class UpstreamError(Exception):
    """The child's reply could not be had."""


class ConnectFailed(UpstreamError):
    """No connection to the child (it is gone, or not listening yet)."""


class Disconnected(UpstreamError):
    """The child closed the connection before its reply was complete."""


class BadReply(UpstreamError):
    """The child's reply is not HTTP/1.1 this client can read."""


@dataclass(slots=True)
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # as sent, in order; names as the child spelled them
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


_SAFE_PATH = "/:@!$&'()*+,;=-._~%"


def request_head(method: str, target: str, host: str, headers: dict[str, str], body: bytes | None) -> bytes:
    """The request line and headers. `target`: path and query, already encoded
    (no space or control character reaches the request line)."""
    lines = [f"{method} {quote(target, safe=_SAFE_PATH + '?')} HTTP/1.1\r\nHost: {host}\r\n"]
    for k, v in headers.items():
        lines.append(f"{k}: {v}\r\n")
    if body is not None or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body) if body else 0}\r\n")
    lines.append("\r\n")
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: this gives back the client's bytes.
    return "".join(lines).encode("utf-8", "surrogateescape")


class _Connection(asyncio.Protocol):
    """One kept-alive connection; one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.received = False  # a byte of the current reply has arrived
        self.idle_since = 0.0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.keep_alive = False
        self.complete = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadReply("the child asked to upgrade the connection"))
        except httptools.HttpParserError as e:
            self._fail(BadReply(f"unreadable reply from the child: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is None or self.waiter.done():
            return
        if self.headers_done and self._ends_at_eof():
            self.on_message_complete()  # a reply with neither a length nor chunks ends with the connection
        else:
            self._fail(Disconnected(f"the child closed the connection{': ' + str(exc) if exc else ''}"))

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message is complete

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # the client's side
    def _ends_at_eof(self) -> bool:
        names = {k.lower(): v for k, v in self.headers}
        return "content-length" not in names and "chunked" not in names.get("transfer-encoding", "").lower()

    def _fail(self, error: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, data: bytes, timeout: float | None) -> Reply:
        assert self.transport is not None
        self.reason, self.headers, self.body = "", [], []
        self.received = self.complete = self.headers_done = self.keep_alive = False
        self.waiter = self.loop.create_future()
        self.transport.write(data)
        timer = self.loop.call_later(timeout, self._fail, TimeoutError(
            f"no complete reply from the child within {timeout:g} s")) if timeout else None
        try:
            await self.waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        status = self.parser.get_status_code()
        if not self.keep_alive:
            self.close()
        return Reply(status, self.reason, self.headers, b"".join(self.body))


class _Child:
    """The connections to one child: idle ones, newest last, and a limit on those in use."""

    def __init__(self, limit: int) -> None:
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(limit)
        self.busy = 0


class UpstreamPool:
    def __init__(self, per_child: int = 4, keepalive_s: float = 2.0) -> None:
        self.per_child = per_child
        self.keepalive_s = keepalive_s
        self._children: dict[tuple[str, int], _Child] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(self, method: str, host: str, port: int, target: str, headers: dict[str, str],
                      body: bytes | None, *, connect_timeout: float | None,
                      read_timeout: float | None) -> Reply:
        """Send one request and read its whole reply. Raises ConnectFailed,
        Disconnected, BadReply, or TimeoutError (no complete reply within
        `read_timeout`)."""
        key = (host, port)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = _Child(self.per_child)
        head = request_head(method, target, f"{host}:{port}", headers, body) + (body or b"")
        child.busy += 1  # waiting for a slot counts: the sweeper keeps this child's entry
        try:
            async with child.slots:
                for _ in range(2):
                    conn = self._take(child)
                    reused = conn is not None
                    if conn is None:
                        conn = await self._connect(host, port, connect_timeout)
                    try:
                        reply = await conn.exchange(head, read_timeout)
                    except Disconnected:
                        conn.close()
                        if reused and not conn.received:
                            continue  # the child had closed it while idle: once more, on a new connection
                        raise
                    except BaseException:
                        conn.close()  # cancelled or failed mid-exchange: never reused
                        raise
                    if not conn.closed and not self._closed:
                        conn.idle_since = time.monotonic()
                        child.idle.append(conn)
                        self._arm()
                    return reply
                raise Disconnected("the child closed two connections in a row before replying")
        finally:
            child.busy -= 1

    def _take(self, child: _Child) -> _Connection | None:
        deadline = time.monotonic() - self.keepalive_s
        while child.idle:
            conn = child.idle.pop()
            if not conn.closed and conn.idle_since > deadline:
                return conn
            conn.close()
        return None

    async def _connect(self, host: str, port: int, timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: _Connection(loop), host, port)
        except TimeoutError:
            raise ConnectFailed(f"no connection to {host}:{port} within {timeout:g} s") from None
        except OSError as e:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
        return conn

    def _arm(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_s, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for keepalive_s; forget children with none."""
        self._sweeper = None
        deadline = time.monotonic() - self.keepalive_s
        for key, child in list(self._children.items()):
            while child.idle and (child.idle[0].closed or child.idle[0].idle_since <= deadline):
                child.idle.popleft().close()
            if not child.idle and not child.busy:
                del self._children[key]
        if any(child.idle for child in self._children.values()):
            self._arm()

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for child in self._children.values():
            while child.idle:
                child.idle.pop().close()
        self._children.clear()
