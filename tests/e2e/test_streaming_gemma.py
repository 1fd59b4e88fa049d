"""Streaming with the real Gemma 3 270M model: long enough replies to catch a
swap, a crash or a client leaving in the middle."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import openai
import psutil
import pytest

from tests.support.routerproc import RouterProcess, child_command, write_config

pytestmark = [pytest.mark.real, pytest.mark.gemma]


@pytest.fixture
def router(tmp_path, llama_server, gemma):
    models = {"gemma": {"path": str(gemma), "aliases": ["g"]}, "gemma-b": {"path": str(gemma)}}
    cfg = write_config(tmp_path / "config.yaml", models, router={"models_max": 1},
                       spawn={"command": child_command(llama_server, ctx=2048)})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        yield r


def client(r: RouterProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=r.url + "/v1", api_key="unused", timeout=120, max_retries=0)


def ask(model: str, n: int, stream: bool = False) -> dict:
    return {"model": model, "stream": stream, "max_tokens": n, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]}


def gemma_child(r: RouterProcess) -> psutil.Process:
    kids = [p for p in r.children() if "llama-server" in p.name()]
    assert len(kids) == 1
    return kids[0]


def test_openai_client_talks_to_two_gemma_models(router):
    c = client(router)
    reply = c.chat.completions.create(**ask("gemma", 8))
    assert reply.choices[0].message.content and reply.model == "gemma"
    stream = c.chat.completions.create(**ask("gemma-b", 8, stream=True))
    chunks = list(stream)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices).strip()
    assert {ch.model for ch in chunks} == {"gemma-b"}


async def test_busy_model_is_not_evicted_while_it_streams(router):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        async def stream_a():
            n_chunks, finish = 0, None
            async with s.post(router.url + "/v1/chat/completions", json=ask("gemma", 80, True)) as resp:
                async for line in resp.content:
                    if line.startswith(b"data: {"):
                        chunk = json.loads(line[6:])
                        assert "error" not in chunk, chunk
                        n_chunks += 1
                        finish = chunk["choices"][0]["finish_reason"] or finish
                        if n_chunks == 3:
                            started.set()
            return n_chunks, finish, time.monotonic()

        async def ask_b():
            await started.wait()
            async with s.post(router.url + "/v1/chat/completions", json=ask("gemma-b", 2)) as resp:
                assert resp.status == 200
                await resp.read()
            return time.monotonic()

        started = asyncio.Event()
        (n_chunks, finish, a_done), b_done = await asyncio.gather(stream_a(), ask_b())
    assert finish == "length" and n_chunks >= 80  # A's stream was never cut
    assert b_done > a_done  # B was served only after A finished


async def test_child_killed_mid_stream_gives_an_error_and_the_next_request_reloads(router):
    client(router).chat.completions.create(**ask("gemma", 1))
    child = gemma_child(router)
    got_error = False
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s,
                s.post(router.url + "/v1/chat/completions", json=ask("gemma", 400, True)) as resp):
        n = 0
        try:
            async for line in resp.content:
                if line.startswith(b"data: {"):
                    n += 1
                    if b'"error"' in line:
                        got_error = True
                    if n == 3:
                        child.kill()
        except aiohttp.ClientPayloadError:
            got_error = True
    assert got_error, "the client was not told that the stream broke"
    reply = client(router).chat.completions.create(**ask("gemma", 2))
    assert reply.choices
    assert gemma_child(router).pid != child.pid


async def test_client_going_away_stops_generation_in_the_child(router):
    c = client(router)
    c.chat.completions.create(**ask("gemma", 1))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        resp = await s.post(router.url + "/v1/chat/completions", json=ask("gemma", 2000, True))
        async for line in resp.content:
            if line.startswith(b"data: {"):
                break
        resp.close()  # drop the connection mid-stream
    deadline = time.monotonic() + 20
    busy = True
    async with aiohttp.ClientSession() as s:
        while busy and time.monotonic() < deadline:
            async with s.get(router.url + "/slots?model=gemma") as r:
                slots = await r.json()
            busy = any(slot.get("is_processing") for slot in slots)
            await asyncio.sleep(0.2)
    assert not busy, "the child kept generating for a client that left"
