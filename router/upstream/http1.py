"""One HTTP/1.1 connection from the router to a child, and the reply read on it.

The request is written as one buffer (request_head); the reply is parsed by
httptools (llhttp, the parser of Node.js) as it arrives and read either as
it comes (Reply.iter_any) or whole (Reply.read). While the reader is slower
than the child, reading from the socket pauses past HIGH_WATER bytes held,
so a stream never piles up in the router's memory. The pool that decides
which connection a request takes is router/upstream/pool.py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import cast
from urllib.parse import quote

import httptools
from multidict import CIMultiDict

HIGH_WATER = 256 * 1024  # bytes of a reply held before reading from the child pauses


class UpstreamError(Exception):
    """The child's reply could not be had."""


class ConnectFailed(UpstreamError):
    """No connection to the child (it is gone, or not listening yet)."""


class Disconnected(UpstreamError):
    """The child closed the connection before its reply was complete."""


class BadReply(UpstreamError):
    """The child's reply is not HTTP/1.1 this client can read."""


_SAFE_TARGET = "/:@!$&'()*+,;=-._~%?"


def request_head(method: str, target: str, host: str, headers: dict[str, str], body: bytes | None,
                 keep_alive: bool = True) -> bytes:
    """The request line and headers. `target`: path and query, already encoded
    (no space or control character reaches the request line)."""
    lines = [f"{method} {quote(target, safe=_SAFE_TARGET)} HTTP/1.1\r\nHost: {host}\r\n"]
    for k, v in headers.items():
        lines.append(f"{k}: {v}\r\n")
    if body is not None or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body) if body else 0}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: this gives back the client's bytes.
    return "".join(lines).encode("utf-8", "surrogateescape")


class Connection(asyncio.Protocol):
    """One connection to a child; one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[Connection], None] | None = None) -> None:
        """`on_lost`: told when the connection is gone, whoever closed it."""
        self.loop = loop
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._begin()

    def _begin(self) -> None:
        self.received = False  # a byte of the current reply has arrived
        self.reason = ""
        self.raw_headers: list[tuple[str, str]] = []
        self.head_done = False
        self.informational = False  # inside a 1xx reply
        self.bodiless = False
        self.keep_alive = False
        self.complete = False
        self.error: BaseException | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None

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
        if self.on_lost is not None:
            self.on_lost(self)
        if self.complete or self.error is not None:
            return
        if self.head_done and self._ends_at_eof():
            self.on_message_complete()  # a reply with neither a length nor chunks ends with the connection
        else:
            self._fail(Disconnected(f"the child closed the connection{': ' + str(exc) if exc else ''}"))

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:  # 100 Continue and the like: the reply is still to come
            self.informational = True
            self.raw_headers = []
            return
        self.head_done = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message is complete
        if self.bodiless:  # a reply to HEAD: its Content-Length describes a body never sent
            self.complete, self.keep_alive = True, False  # (llhttp would wait for it: not reused)
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True
        self._wake()

    # the client's side
    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _ends_at_eof(self) -> bool:
        names = {k.lower(): v for k, v in self.raw_headers}
        return "content-length" not in names and "chunked" not in names.get("transfer-encoding", "").lower()

    def _fail(self, error: BaseException) -> None:
        if self.error is None and not self.complete:
            self.error = error
            self._wake()
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes, bodiless: bool = False) -> None:
        """`bodiless`: the request is a HEAD, its reply has no body."""
        assert self.transport is not None
        self._begin()
        self.bodiless = bodiless
        self.transport.write(data)

    async def wait(self, timeout: float | None, what: str) -> None:
        """Until something happens: the head, a chunk, the end, or a failure."""
        self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, self._fail, TimeoutError(
            f"no {what} from the child within {timeout:g} s")) if timeout else None
        try:
            await self.waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        if len(self.chunks) == 1:
            data = self.chunks.popleft()
        else:
            data = b"".join(self.chunks)
            self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data


class Reply:
    """A child's reply under way: its status and headers are in; the body comes
    with read() or iter_any(). `async with` hands the connection back (or closes it)."""

    def __init__(self, conn: Connection, read_timeout: float | None,
                 done: Callable[[Connection | None], None] | None = None) -> None:
        """`done`: told once, on release, of the connection when it may carry another
        request (the reply read whole, kept alive), else of None (it was closed)."""
        self._conn, self._timeout, self._done = conn, read_timeout, done
        self.status = conn.parser.get_status_code()
        self.reason = conn.reason
        self.headers: CIMultiDict[str] = CIMultiDict(conn.raw_headers)
        length = self.headers.get("Content-Length")
        self.content_length = int(length) if length is not None and length.isdigit() else None

    async def read(self) -> bytes:
        conn = self._conn
        while not conn.complete:
            self._raise()
            await conn.wait(self._timeout, "complete reply")
        self._raise()
        return conn.take() if conn.chunks else b""

    async def iter_any(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.chunks:
                yield conn.take()
            elif conn.complete:
                return
            else:
                self._raise()
                await conn.wait(self._timeout, "data")

    def _raise(self) -> None:
        if self._conn.error is not None:
            raise self._conn.error

    def close(self) -> None:
        """Abandon the reply: the child sees the connection close and stops generating."""
        self._conn.close()

    def release(self) -> None:
        conn = self._conn
        done, self._done = self._done, None
        reusable = done is not None and conn.complete and conn.keep_alive and not conn.closed and not conn.chunks
        if not reusable:
            conn.close()
        if done is not None:
            done(conn if reusable else None)

    async def __aenter__(self) -> Reply:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
