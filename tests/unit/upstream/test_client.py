"""The router's own calls to its children (router/upstream/client.py) against
scripted stand-in servers: a fresh connection per call, a timeout that bounds
the whole call, and the layer's own errors. Against a real llama-server: the
health polls, /props, /slots and /metrics of tests/e2e (test_children,
test_kv_persistence, test_metrics)."""

from __future__ import annotations

import ast
import asyncio
import json
import time
from pathlib import Path

import pytest

from router.upstream.client import ChildClient, host_port
from router.upstream.pool import BadReply, ConnectFailed, UpstreamPool
from tests.unit.upstream.test_pool import OK, Script, Server, replies, served

pytestmark = pytest.mark.timeout(20)

ROUTER = Path(__file__).resolve().parents[3] / "router"


async def test_each_call_takes_a_fresh_connection_closed_with_the_reply():
    # The child offers keep-alive; the client still closes: no idle connection holds one of
    # llama-server's HTTP threads between the manager's calls.
    async with served(replies(*[OK] * 3), headers={"Authorization": "Bearer s3cret"}) as (server, pool):
        client = ChildClient(pool)
        base = f"http://127.0.0.1:{server.port}"
        answers = [await client.get(base, "/props", timeout=2) for _ in range(2)]
        answers.append(await client.post_json(base, "/slots/0?action=save", {"filename": "m.bin"}, timeout=2))
        assert [(a.status, a.json()) for a in answers] == [(200, {})] * 3
        deadline = time.monotonic() + 5
        while server.open and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert (server.connections, server.open, server.most_open) == (3, 0, 1)
        for request in server.requests:
            assert b"\r\nConnection: close\r\n" in request and b"\r\nAuthorization: Bearer s3cret\r\n" in request
        post = server.requests[2]
        assert post.startswith(b"POST /slots/0?action=save HTTP/1.1\r\n")
        assert b"\r\nContent-Type: application/json\r\n" in post
        assert json.loads(post.split(b"\r\n\r\n", 1)[1]) == {"filename": "m.bin"}


def trickle(server: Server) -> Script:
    """A reply whose body comes one byte every 0.1 s: each read is quick, the whole is not."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.1)
    return script


async def test_the_timeout_bounds_the_whole_call_not_each_read():
    async with served(trickle) as (server, pool):
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await ChildClient(pool).get(f"http://127.0.0.1:{server.port}", "/metrics", timeout=0.5)
        assert time.monotonic() - t0 < 2


async def test_a_status_is_answered_and_the_failures_are_the_layers_own():
    not_json = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!"
    async with served(replies(not_json)) as (server, pool):
        client = ChildClient(pool)
        answer = await client.get(f"http://127.0.0.1:{server.port}", "/slots", timeout=2)
        assert (answer.status, answer.text()) == (500, "oops!")
        with pytest.raises(BadReply):
            answer.json()
    pool = UpstreamPool()
    try:
        with pytest.raises(ConnectFailed):  # the server above is gone: nothing listens there
            await ChildClient(pool).get(f"http://127.0.0.1:{server.port}", "/health", timeout=2)
    finally:
        await pool.close()


def test_a_base_url_gives_its_host_and_port():
    assert host_port("http://127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert host_port("http://[fd00::1]:9000") == ("fd00::1", 9000)


AIOHTTP_CLIENT = {"ClientSession", "TCPConnector", "ClientTimeout", "request"}


def test_the_router_reaches_its_children_through_the_upstream_layer_only():
    """aiohttp's client appears nowhere in the router: one client, router/upstream/."""
    found = []
    for path in ROUTER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in AIOHTTP_CLIENT and isinstance(node.value, ast.Name)
                    and node.value.id == "aiohttp"):
                found.append(f"{path.relative_to(ROUTER.parent)}:{node.lineno} aiohttp.{node.attr}")
            elif isinstance(node, ast.ImportFrom) and node.module == "aiohttp":
                found += [f"{path.relative_to(ROUTER.parent)}:{node.lineno} from aiohttp import {a.name}"
                          for a in node.names if a.name in AIOHTTP_CLIENT]
    assert not found, "aiohttp's client used:\n" + "\n".join(found)
