"""A request right after a streamed reply must not fail on a stale connection.

llama-server closes its end of the connection after a streamed reply while
still announcing keep-alive; the router must not hand that connection to
the next request (found by the benchmark: 502 "Server disconnected" under load).
"""

from __future__ import annotations

import asyncio

import aiohttp
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
