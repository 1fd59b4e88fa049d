"""The model field of a multipart upload (audio transcriptions): found wherever
it sits, malformed bodies refused, and a large upload neither copied whole nor
parsed on the event loop."""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc

import pytest

from router.http.multipart import MultipartError, _find, form_field
from tests.support.waiting import until

BOUNDARY = "----llamarouter42"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n"
    if filename:
        head += "Content-Type: audio/wav\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


AUDIO = os.urandom(64 * 1024)


@pytest.mark.parametrize("order", ["model first", "model last"])
async def test_the_model_field_is_found_wherever_it_sits(order):
    parts = [part("model", b"whisper-small"), part("file", AUDIO, "a.wav")]
    if order == "model last":
        parts.reverse()
    assert await form_field(CTYPE, body(*parts), "model") == "whisper-small"


async def test_no_model_field_is_none_and_the_value_is_trimmed_and_bounded():
    assert await form_field(CTYPE, body(part("file", AUDIO, "a.wav")), "model") is None
    assert await form_field(CTYPE, body(part("model", b"  gemma \n")), "model") == "gemma"
    assert len(await form_field(CTYPE, body(part("model", b"x" * 100_000)), "model") or "") == 4096


@pytest.mark.parametrize("ctype, data", [
    ("multipart/form-data", body(part("model", b"m"))),  # no boundary
    ("multipart/form-data; boundary=other", body(part("model", b"m"))),  # wrong boundary
    (CTYPE, b"this is not multipart at all"),
    (CTYPE, f"--{BOUNDARY}\r\nno header end".encode()),
])
async def test_malformed_bodies_are_refused(ctype, data):
    with pytest.raises(MultipartError):
        await form_field(ctype, data, "model")


def test_a_25_mib_upload_is_never_copied_whole():
    big = body(part("file", os.urandom(25 * 1024 * 1024), "a.wav"), part("model", b"whisper"))
    tracemalloc.start()
    try:
        assert _find(CTYPE, big, "model") == "whisper"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"parsing allocated {peak / 2**20:.1f} MiB for a 25 MiB body"


async def test_a_large_upload_does_not_hold_the_event_loop():
    big = body(part("file", os.urandom(25 * 1024 * 1024), "a.wav"), part("model", b"whisper"))
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await until(lambda: gaps, 2, "the ticker's first tick")
    try:
        assert await form_field(CTYPE, big, "model") == "whisper"
    finally:
        done.set()
        await tick
    assert max(gaps) < 0.05, f"the event loop stalled for {max(gaps) * 1000:.0f} ms"
