"""A lean HTTP/1.1 client for the router's requests to its children.

Between the router and a child on the loopback, the client's own cost is
most of what the router adds: aiohttp's client spends about 85 us of CPU per
request on the bench machine (its connector, cookie jar, tracing hooks, URL
and header objects); writing the request as one buffer and reading the reply
with httptools (llhttp, the parser of Node.js) costs about 20, and each
relayed chunk of a stream passes through fewer layers.

Two kinds of request (router/api/inference.py chooses):

- light ones (/tokenize, /props...: no slot, microseconds to answer) reuse
  kept-alive connections, at most `per_child` at once per child (an open
  connection holds one of llama-server's few HTTP threads; the others wait
  here, in order), closed after `keepalive_s` idle, below llama-server's own
  5 s. One sent on a kept-alive connection that the child had closed
  meanwhile is sent once more on a new one: light requests are idempotent.
- the others (generation) get a fresh connection each, closed with the
  reply: an idle kept-alive connection would hold a thread a slot needs.

A reply is read as it comes or whole, with back-pressure: router/upstream/http1.py.
The router's own calls to its children (health, /props, /slots, /metrics) go
through this pool too, on fresh connections: router/upstream/client.py.

The same client reaches servers the router does not start (a model's `url`, a
peer): `tls=True` wraps the connection in TLS (asyncio's, verified against the
system's certificates, which SSL_CERT_FILE may name), so no second HTTP client
is needed for an https endpoint. Only HTTP/1.1 is spoken.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from functools import partial

from router.upstream.http1 import (
    BadReply,
    ConnectFailed,
    Connection,
    Disconnected,
    Reply,
    UpstreamError,
    request_head,
)

__all__ = ["BadReply", "ConnectFailed", "Disconnected", "Reply", "UpstreamError", "UpstreamPool", "request_head"]


class _Child:
    """The kept-alive connections to one child: idle ones, newest last, and a limit on those in use."""

    def __init__(self, limit: int) -> None:
        self.idle: deque[Connection] = deque()
        self.slots = asyncio.Semaphore(limit)
        self.busy = 0


# At most PER_CHILD light connections per child: llama-server has at least parallel + 4 HTTP
# threads, so a fixed pool (older builds) keeps one per slot for the fresh connections.
PER_CHILD = 4
KEEPALIVE_S = 2.0  # below llama-server's own 5 s


class UpstreamPool:
    def __init__(self, per_child: int = PER_CHILD, keepalive_s: float = KEEPALIVE_S,
                 headers: dict[str, str] | None = None) -> None:
        """`headers`: sent with every request (the cluster front's secret for a host's children)."""
        self.per_child = per_child
        self.keepalive_s = keepalive_s
        self.headers = headers or {}
        self._children: dict[tuple[str, int, bool], _Child] = {}
        self._open: set[Connection] = set()  # every connection not yet gone, idle or in use
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._tls: ssl.SSLContext | None = None

    async def request(self, method: str, host: str, port: int, target: str, headers: dict[str, str],
                      body: bytes | None, *, connect_timeout: float | None, read_timeout: float | None,
                      keep_alive: bool, tls: bool = False) -> Reply:
        """Send one request and wait for the head of its reply. `keep_alive`: over the
        kept-alive connections (a light request); else on a fresh connection of its own.
        `tls`: an https server (a model's `url`, a peer).
        Raises ConnectFailed, Disconnected, BadReply, or TimeoutError (`read_timeout`
        between two reads)."""
        name = f"[{host}]" if ":" in host else host  # an IPv6 address in brackets
        authority = name if port == (443 if tls else 80) else f"{name}:{port}"
        if self.headers:
            headers = {**headers, **self.headers}
        head = request_head(method, target, authority, headers, body, keep_alive) + (body or b"")
        bodiless = method == "HEAD"
        if not keep_alive:
            fresh = await self._connect(host, port, connect_timeout, tls)
            return await self._exchange(None, fresh, head, bodiless, read_timeout)
        child = self._children.get((host, port, tls))
        if child is None:
            child = self._children[(host, port, tls)] = _Child(self.per_child)
        child.busy += 1  # waiting for a slot counts: the sweeper keeps this child's entry
        try:
            await child.slots.acquire()
        except BaseException:
            child.busy -= 1
            raise
        try:
            for _ in range(2):
                conn = self._take(child)
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(host, port, connect_timeout, tls)
                try:
                    return await self._exchange(child, conn, head, bodiless, read_timeout)
                except Disconnected:
                    if reused and not conn.received:
                        continue  # the child had closed it while idle: once more, on a new connection
                    raise
            raise Disconnected("the child closed two connections in a row before replying")
        except BaseException:
            self._leave(child)
            raise

    async def _exchange(self, child: _Child | None, conn: Connection, head: bytes, bodiless: bool,
                        read_timeout: float | None) -> Reply:
        """`child`: the light requests' entry the connection goes back to (None: closed after)."""
        conn.send(head, bodiless=bodiless)
        try:
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(read_timeout, "reply")
        except BaseException:
            conn.close()  # cancelled or failed before the head: never reused
            raise
        return Reply(conn, read_timeout, None if child is None else partial(self._put, child))

    def _put(self, child: _Child, conn: Connection | None) -> None:
        """A light request is done: its connection (None: closed) back, its slot free.
        (The sweeper keeps a child's entry while it is busy.)"""
        if conn is not None and self._closed:
            conn.close()
        elif conn is not None:
            conn.idle_since = time.monotonic()
            child.idle.append(conn)
            self._arm()
        self._leave(child)

    def _leave(self, child: _Child) -> None:
        child.busy -= 1
        child.slots.release()

    def _take(self, child: _Child) -> Connection | None:
        deadline = time.monotonic() - self.keepalive_s
        while child.idle:
            conn = child.idle.pop()
            if not conn.closed and conn.idle_since > deadline:
                return conn
            conn.close()
        return None

    async def _connect(self, host: str, port: int, timeout: float | None, tls: bool = False) -> Connection:
        loop = asyncio.get_running_loop()
        context = self._tls_context() if tls else None
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: Connection(loop, self._open.discard), host, port,
                                                       ssl=context, server_hostname=host if tls else None)
        except TimeoutError:
            raise ConnectFailed(f"no connection to {host}:{port} within {timeout:g} s") from None
        except ssl.SSLError as e:  # an OSError too: say it was TLS (a certificate not trusted...)
            raise ConnectFailed(f"TLS with {host}:{port} failed: {e.reason or e}") from None
        except OSError as e:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
        if self._closed:
            conn.close()
            raise ConnectFailed("the client is closed")
        self._open.add(conn)
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        """One context for every https server, made by the first (reading the system's certificates
        takes milliseconds; most routers never reach an https server)."""
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

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
        """Close every connection, those in use too: a reply under way ends with Disconnected."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for child in self._children.values():
            child.idle.clear()
        for conn in list(self._open):
            conn.close()
