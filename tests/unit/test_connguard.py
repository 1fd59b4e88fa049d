"""The connection guard (router/connguard.py) in-process, on a real socket.

The guard subclasses aiohttp's private request handler and runner internals,
so it is only as good as the aiohttp it runs on: these tests run in `make
test-min` too, against the oldest aiohttp pyproject.toml allows, and fail
loudly when an aiohttp release inside the declared range moves what the guard
relies on. The same guard in a real router process: tests/e2e/test_slow_clients.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from router.connguard import ConnectionGuard, GuardedRunner

pytestmark = pytest.mark.timeout(30)

HEADER_TIMEOUT = 0.4
GET = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@asynccontextmanager
async def guarded(header_timeout: float = HEADER_TIMEOUT, max_per_address: int = 0) -> AsyncIterator[int]:
    """A GuardedRunner serving GET /ok on 127.0.0.1; yields its port."""
    app = web.Application()
    app.router.add_get("/ok", ok)
    runner = GuardedRunner(app, ConnectionGuard(header_timeout, max_per_address), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def status_line(reader: asyncio.StreamReader, deadline: float = 5.0) -> str:
    """The next response's status line; reads the rest of that response's head and body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), deadline)
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    await asyncio.wait_for(reader.readexactly(length), deadline)
    return head.split(b"\r\n", 1)[0].decode()


async def test_headers_not_finished_in_time_get_408_and_the_connection_closes():
    async with guarded() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n")  # no blank line: the headers never end
        await writer.drain()
        assert await status_line(reader) == "HTTP/1.1 408 Request Timeout"
        assert HEADER_TIMEOUT * 0.9 <= time.monotonic() - t0 < HEADER_TIMEOUT + 3
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the router
        writer.close()


async def test_a_kept_alive_connection_is_timed_per_request_not_while_idle():
    async with guarded() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(GET)
            assert await status_line(reader) == "HTTP/1.1 200 OK"
            await asyncio.sleep(HEADER_TIMEOUT * 2)  # idle between requests: no clock runs
        # The next request's first bytes start the clock again.
        writer.write(b"GET /ok HTTP/1.1\r\n")
        await writer.drain()
        assert await status_line(reader) == "HTTP/1.1 408 Request Timeout"
        writer.close()


async def test_one_address_holds_at_most_max_connections_and_gets_them_back():
    async with guarded(max_per_address=2) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for reader, writer in held:  # both admitted and served
            writer.write(GET)
            assert await status_line(reader) == "HTTP/1.1 200 OK"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await status_line(reader) == "HTTP/1.1 429 Too Many Requests"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        for _, w in held:
            w.close()
            await w.wait_closed()
        # The count goes down as the connections close: a new one is served again.
        deadline = time.monotonic() + 5
        while True:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(GET)
            line = await status_line(reader)
            writer.close()
            if line == "HTTP/1.1 200 OK" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert line == "HTTP/1.1 200 OK"
