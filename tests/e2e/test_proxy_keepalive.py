"""A request right after a streamed reply must not fail on a stale connection.

llama-server closes its end of the connection after a streamed reply while
still announcing keep-alive; the router must not hand that connection to
the next request (found by the benchmark: 502 "Server disconnected" under load).
"""

from __future__ import annotations

import asyncio
import threading
import time

import aiohttp
import psutil
import pytest

from tests.support.routerproc import RouterProcess, child_command, write_config

pytestmark = pytest.mark.real


async def _stream_then_tokenize(url: str, rounds: int) -> list[int | bytes]:
    """Statuses of every request; a failure's body instead of its status."""
    statuses: list[int | bytes] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        for _ in range(rounds):
            body = {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                    "stream": True}
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                data = await r.read()
                statuses.append(r.status if r.status == 200 else data)
            for delay in (0, 0.01):
                await asyncio.sleep(delay)
                async with s.post(url + "/tokenize", json={"model": "tiny-a", "content": "hi"}) as r:
                    data = await r.read()
                    statuses.append(r.status if r.status == 200 else data)
    return statuses


def test_request_after_stream_reuses_no_closed_connection(tmp_path, llama_server, tiny_dir):
    cfg = write_config(tmp_path / "config.yaml", {"tiny-a": {"path": str(tiny_dir / "tiny-a.gguf")}},
                       spawn={"command": child_command(llama_server)})
    with RouterProcess(cfg, tmp_path / "router.log") as router:
        statuses = asyncio.run(_stream_then_tokenize(router.url, 15))
    assert statuses == [200] * len(statuses)


async def _tokenize_load(url: str, clients: int, each: int) -> list[int | bytes]:
    statuses: list[int | bytes] = []

    async def client() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            for i in range(each):
                async with s.post(url + "/tokenize", json={"model": "tiny-a", "content": f"hello {i}"}) as r:
                    data = await r.read()
                    statuses.append(r.status if r.status == 200 and b'"tokens"' in data else data)
    await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


def test_light_requests_share_a_few_kept_alive_connections(tmp_path, llama_server, tiny_dir):
    """Past llama-server's 100 requests per connection, 8 clients at once: every reply
    arrives, and the child never holds more than 4 of the router's light connections."""
    cfg = write_config(tmp_path / "config.yaml", {"tiny-a": {"path": str(tiny_dir / "tiny-a.gguf")}},
                       spawn={"command": child_command(llama_server)})
    with RouterProcess(cfg, tmp_path / "router.log") as router:
        assert asyncio.run(_tokenize_load(router.url, 1, 1)) == [200]  # loads the child
        (child,) = router.children()
        port = next(c.laddr.port for c in child.net_connections("tcp") if c.status == psutil.CONN_LISTEN)
        most = 0
        done = threading.Event()

        def watch() -> None:
            nonlocal most
            while not done.is_set():
                open_ = [c for c in child.net_connections("tcp")
                         if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port]
                most = max(most, len(open_))
                time.sleep(0.002)
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            statuses = asyncio.run(_tokenize_load(router.url, 8, 40))
            statuses += asyncio.run(_tokenize_load(router.url, 1, 250))
        finally:
            done.set()
            watcher.join()
    assert statuses == [200] * (8 * 40 + 250)
    assert 1 <= most <= 4


def test_a_client_that_expects_100_continue_gets_the_childs_reply(tmp_path, llama_server, tiny_dir):
    """curl sends `Expect: 100-continue` with large bodies; the reply is llama-server's 200, not a 100."""
    cfg = write_config(tmp_path / "config.yaml", {"tiny-a": {"path": str(tiny_dir / "tiny-a.gguf")}},
                       spawn={"command": child_command(llama_server)})

    async def ask(url: str) -> tuple[int, bytes]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            body = {"model": "tiny-a", "content": "hello " * 20000}
            async with s.post(url + "/tokenize", json=body, expect100=True) as r:
                return r.status, await r.read()
    with RouterProcess(cfg, tmp_path / "router.log") as router:
        status, data = asyncio.run(ask(router.url))
    assert status == 200 and data.startswith(b'{"tokens":[')
