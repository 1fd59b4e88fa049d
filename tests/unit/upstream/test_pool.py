"""The lean client of light requests (router/upstream/pool.py) against scripted
stand-in servers: what a child may do to a kept-alive connection. The same
client against a real llama-server: tests/e2e/test_proxy_keepalive.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from multidict import CIMultiDict

from router.upstream import http1
from router.upstream.pool import BadReply, ConnectFailed, Disconnected, UpstreamPool, request_head
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(20)

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A TCP server running `script` per connection; counts connections, open and at once."""

    def __init__(self, script: Script):
        self.script = script
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []
        self.closed_by_client = 0

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.script(reader, writer)
            if not await reader.read(1):
                self.closed_by_client += 1
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                self.closed_by_client += 1  # closed while the script waited for a request
        except ConnectionError:
            pass
        finally:
            self.open -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


def replies(*answers: bytes, delay: float = 0.0) -> Callable[[Server], Script]:
    """Answer each request on a connection with the next of `answers`, then wait for more."""
    def make(server: Server) -> Script:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for answer in answers:
                await server.read_request(reader)
                await asyncio.sleep(delay)
                writer.write(answer)
                await writer.drain()
        return script
    return make


async def serve(make: Callable[[Server], Script]) -> Server:
    server = Server(lambda r, w: asyncio.sleep(0))
    server.script = make(server)
    return await server.__aenter__()


@dataclass
class Got:
    status: int
    reason: str
    headers: CIMultiDict[str]
    body: bytes


@asynccontextmanager
async def served(make: Callable[[Server], Script], *pool_args: Any, **pool_kwargs: Any
                 ) -> AsyncIterator[tuple[Server, UpstreamPool]]:
    """A stand-in server running `make`'s script, and a pool (4 per child, 2 s idle unless told): both
    closed after."""
    server = await serve(make)
    pool = UpstreamPool(*(pool_args or (4, 2.0)), **pool_kwargs)
    try:
        yield server, pool
    finally:
        await pool.close()
        await server.__aexit__()


async def ask(pool: UpstreamPool, port: int, body: bytes | None = b'{"content":"hi"}', target: str = "/tokenize",
              read_timeout: float = 5.0, method: str = "POST", keep_alive: bool = True) -> Got:
    reply = await pool.request(method, "127.0.0.1", port, target, {"Content-Type": "application/json"}, body,
                               connect_timeout=2, read_timeout=read_timeout, keep_alive=keep_alive)
    async with reply:
        return Got(reply.status, reply.reason, reply.headers, await reply.read())


async def test_requests_reuse_one_kept_alive_connection():
    async with served(replies(*[OK] * 50)) as (server, pool):
        for _ in range(50):
            reply = await ask(pool, server.port)
            assert (reply.status, reply.body, reply.headers.get("content-type")) == (200, b"{}", "application/json")
        assert server.connections == 1
        assert server.requests[0].startswith(b"POST /tokenize HTTP/1.1\r\n")
        assert b"\r\nContent-Length: 16\r\n" in server.requests[0] and server.requests[0].endswith(b'{"content":"hi"}')


async def test_at_most_per_child_connections_at_once_the_rest_wait_their_turn():
    async with served(replies(*[OK] * 20, delay=0.05), 3, 2.0) as (server, pool):
        got = await asyncio.gather(*(ask(pool, server.port) for _ in range(12)))
        assert [r.status for r in got] == [200] * 12
        assert server.most_open == 3 and server.connections == 3


async def test_a_connection_the_child_closed_while_idle_is_replaced_and_the_request_sent_once_more():
    # llama-server closes after a streamed reply, or after 100 requests, while saying keep-alive
    async with served(replies(OK)) as (server, pool):  # one reply per connection, then the server closes it
        for _ in range(5):
            assert (await ask(pool, server.port)).status == 200
            await asyncio.sleep(0.01)
        assert server.connections == 5 and len(server.requests) == 5


async def test_connection_close_in_the_reply_is_honoured_and_frees_its_turn():
    # llama-server says "Connection: close" on its 100th reply on one connection
    closing = OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    async with served(replies(closing, OK), 1, 2.0) as (server, pool):
        await ask(pool, server.port)
        await asyncio.wait_for(ask(pool, server.port), 5)  # the one connection allowed is free again
        assert server.connections == 2 and server.closed_by_client >= 1


async def test_chunked_and_unsized_replies_are_read_whole():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    unsized = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nno such thing"
    async def chunked_then_unsized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in (chunked, unsized):
            await server.read_request(reader)
            writer.write(answer)
            await writer.drain()
        writer.close()  # the end of the unsized reply
    async with served(lambda s: chunked_then_unsized) as (server, pool):
        first = await ask(pool, server.port)
        assert (first.status, first.body) == (200, b"abcde")
        second = await ask(pool, server.port)
        assert (second.status, second.reason, second.body) == (404, "Not Found", b"no such thing")


async def test_a_child_lost_mid_reply_is_disconnected_not_retried():
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"

    async def die_mid_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(cut)
        await writer.drain()
        writer.transport.abort()
    async with served(lambda s: die_mid_reply) as (server, pool):
        with pytest.raises(Disconnected):
            await ask(pool, server.port)
        assert len(server.requests) == 1  # bytes of the reply had come: never sent twice


async def test_an_informational_reply_is_skipped_for_the_real_one():
    async def continue_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)  # the real reply in a packet of its own
            writer.write(OK)
            await writer.drain()
    async with served(lambda s: continue_first) as (server, pool):
        first = await ask(pool, server.port)
        assert (first.status, first.body) == (200, b"{}")
        assert (await ask(pool, server.port)).status == 200 and server.connections == 1


async def test_a_reply_to_head_has_no_body_to_wait_for():
    head_reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1234\r\n\r\n"
    async with served(replies(head_reply, OK)) as (server, pool):
        got = await asyncio.wait_for(ask(pool, server.port, None, "/props", method="HEAD"), 2)
        assert (got.status, got.headers["Content-Length"], got.body) == (200, "1234", b"")
        for _ in range(20):
            if server.closed_by_client:
                break
            await asyncio.sleep(0.05)
        assert server.closed_by_client == 1  # never reused: its parser would wait for those 1234 bytes


async def test_garbage_is_a_bad_reply():
    async with served(replies(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")) as (server, pool):
        with pytest.raises(BadReply):
            await ask(pool, server.port)


async def test_no_reply_in_time_is_a_timeout_and_the_connection_is_dropped():
    async with served(replies(OK, OK, delay=0.5)) as (server, pool):
        with pytest.raises(TimeoutError):
            await ask(pool, server.port, read_timeout=0.1)
        assert (await ask(pool, server.port)).status == 200
        assert server.connections == 2  # the late reply never lands on the next request


async def test_a_cancelled_request_leaves_no_connection_for_the_next():
    async with served(replies(OK, OK, delay=0.3)) as (server, pool):
        task = asyncio.create_task(ask(pool, server.port))
        await until(lambda: server.requests, 2, "the request to reach the server")  # its reply is 0.3 s away
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        reply = await ask(pool, server.port)
        assert reply.status == 200 and server.connections == 2


async def test_nothing_listening_is_connect_failed():
    server = await serve(replies(OK))
    port = server.port
    await server.__aexit__()
    pool = UpstreamPool(4, 2.0)
    try:
        with pytest.raises(ConnectFailed):
            await ask(pool, port)
    finally:
        await pool.close()


async def test_idle_connections_are_closed_after_keepalive():
    async with served(replies(OK, OK), 4, 0.2) as (server, pool):
        await ask(pool, server.port)
        assert server.open == 1
        for _ in range(50):
            if server.open == 0:
                break
            await asyncio.sleep(0.05)
        assert server.open == 0 and server.closed_by_client == 1  # it holds none of the child's threads
        assert (await ask(pool, server.port)).status == 200
        assert server.connections == 2


def test_nothing_from_the_target_or_headers_breaks_the_request_line():
    head = request_head("GET", "/props?model=a b\r\nX-Evil: 1", "127.0.0.1:9", {"Accept": "*/*"}, None)
    first, *rest = head.split(b"\r\n")
    assert first == b"GET /props?model=a%20b%0D%0AX-Evil:%201 HTTP/1.1"
    assert b"X-Evil" not in b"\r\n".join(rest) and b"Content-Length" not in head
    post = request_head("POST", "/tokenize", "127.0.0.1:9", {}, None, keep_alive=False)
    assert b"\r\nConnection: close\r\n" in post
    assert b"\r\nContent-Length: 0\r\n" in post
    assert request_head("GET", "/slots?model=a%2Fb", "h:1", {}, None).startswith(b"GET /slots?model=a%2Fb ")


def _stream_script(server: Server, parts: list[bytes], gap: float, then_close: bool = False) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in parts:
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(gap)
        if then_close:
            writer.transport.abort()
            return
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    return script


async def test_a_stream_is_relayed_as_it_comes_on_a_fresh_connection_of_its_own():
    parts = [b"data: %d\n\n" % i for i in range(5)]
    async with served(lambda s: _stream_script(s, parts, 0.1)) as (server, pool):
        reply = await pool.request("POST", "127.0.0.1", server.port, "/v1/chat/completions", {}, b"{}",
                                   connect_timeout=2, read_timeout=5, keep_alive=False)
        seen: list[tuple[bytes, int]] = []
        async with reply:
            assert reply.headers["Content-Type"] == "text/event-stream" and reply.content_length is None
            async for chunk in reply.iter_any():
                seen.append((chunk, len(server.requests)))
        assert b"".join(c for c, _ in seen) == b"".join(parts)
        assert len(seen) >= 4  # each part as it came, not the whole at the end
        assert b"\r\nConnection: close\r\n" in server.requests[0]
        for _ in range(20):
            if server.closed_by_client or server.open == 0:
                break
            await asyncio.sleep(0.05)
        assert server.open == 0  # never kept: a generation's connection closes with its reply


async def test_a_stream_cut_by_the_child_yields_what_came_then_disconnected():
    parts = [b"data: 1\n\n", b"data: 2\n\n"]
    async with served(lambda s: _stream_script(s, parts, 0.05, then_close=True)) as (server, pool):
        reply = await pool.request("POST", "127.0.0.1", server.port, "/completion", {}, b"{}",
                                   connect_timeout=2, read_timeout=5, keep_alive=False)
        got = b""
        with pytest.raises(Disconnected):
            async with reply:
                async for chunk in reply.iter_any():
                    got += chunk
        assert got == b"".join(parts)


async def test_a_stream_that_stalls_past_the_read_timeout_fails():
    async with served(lambda s: _stream_script(s, [b"data: 1\n\n", b"data: 2\n\n"], 1.0)) as (server, pool):
        reply = await pool.request("POST", "127.0.0.1", server.port, "/completion", {}, b"{}",
                                   connect_timeout=2, read_timeout=0.3, keep_alive=False)
        got = []
        with pytest.raises(TimeoutError):
            async with reply:
                async for chunk in reply.iter_any():
                    got.append(chunk)
        assert got == [b"data: 1\n\n"]


async def test_a_stream_longer_than_the_read_timeout_is_fine_while_it_keeps_coming():
    # 1.5 s in all, twice the read timeout, 0.1 s apart: a margin of 7 gaps for a loaded machine.
    parts = [b"data: %d\n\n" % i for i in range(15)]
    async with served(lambda s: _stream_script(s, parts, 0.1)) as (server, pool):
        reply = await pool.request("POST", "127.0.0.1", server.port, "/completion", {}, b"{}",
                                   connect_timeout=2, read_timeout=0.75, keep_alive=False)
        async with reply:
            got = b"".join([chunk async for chunk in reply.iter_any()])
        assert got == b"".join(parts)


async def test_a_slow_reader_pauses_the_child_instead_of_buffering_its_reply():
    part = b"x" * 65536
    sent = 0

    def make(server: Server) -> Script:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal sent
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 * len(part)))
            for _ in range(64):  # 4 MiB
                writer.write(part)
                await writer.drain()
                sent += len(part)
        return script
    async with served(make) as (server, pool):
        reply = await pool.request("GET", "127.0.0.1", server.port, "/big", {}, None,
                                   connect_timeout=2, read_timeout=5, keep_alive=False)
        got = 0
        most = 0
        async with reply:
            async for chunk in reply.iter_any():
                most = max(most, len(chunk))
                got += len(chunk)
                await asyncio.sleep(0.02)  # a slow client
                assert sent - got < 8 * 2**20  # the child is held back by the socket, not read into memory
        assert got == 64 * len(part)
        assert most <= http1.HIGH_WATER + 2**20  # at most about the high-water mark held at once


async def test_the_pools_headers_go_with_every_request_and_closing_it_cuts_replies_under_way():
    # the cluster front: one pool per host, its secret on every request; a host that leaves is cut at once
    parts = [b"data: %d\n\n" % i for i in range(20)]
    secret = {"Authorization": "Bearer s3cret"}
    async with served(lambda s: _stream_script(s, parts, 0.1), headers=secret) as (server, pool):
        reply = await pool.request("POST", "127.0.0.1", server.port, "/completion", {"Authorization": "Bearer no"},
                                   b"{}", connect_timeout=2, read_timeout=5, keep_alive=False)
        assert b"\r\nAuthorization: Bearer s3cret\r\n" in server.requests[0] and b"Bearer no" not in server.requests[0]
        got = []
        with pytest.raises(Disconnected):
            async with reply:
                async for chunk in reply.iter_any():
                    got.append(chunk)
                    if len(got) == 2:
                        await pool.close()
        assert len(got) < len(parts)
        with pytest.raises(ConnectFailed):
            await ask(pool, server.port)
