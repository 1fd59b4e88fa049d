"""Slow and hostile clients: slow headers and bodies time out, one address
cannot hold every connection, and a client that reads a stream very slowly
neither stalls other clients nor grows the router's memory."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.support.http import call, wait_until
from tests.support.routerproc import RouterProcess, child_command, write_config

pytestmark = [pytest.mark.real, pytest.mark.timeout(180)]


def raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def status_line(s: socket.socket) -> str:
    data = s.recv(4096)
    return data.split(b"\r\n", 1)[0].decode()


def test_slow_headers_slow_bodies_and_too_many_connections(tmp_path: Path, tiny_dir: Path, llama_server: Path):
    cfg = write_config(tmp_path / "c.yaml", {"tiny-a": {"path": str(tiny_dir / "tiny-a.gguf")}},
                       router={"header_timeout": 1.5, "body_timeout": 1.5, "max_client_connections": 4},
                       spawn={"command": child_command(llama_server)})
    with RouterProcess(cfg, tmp_path / "router.log") as router:
        # Headers trickling in, never finished: 408 after header_timeout, not never.
        slow = raw(router.port)
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        for _ in range(5):
            time.sleep(0.2)
            slow.sendall(b"X-Slow: yes\r\n")
        assert status_line(slow).endswith("408 Request Timeout")
        assert 1.4 < time.monotonic() - t0 < 5
        slow.close()
        # Headers complete, body promised but never sent in full: 408 after body_timeout.
        body = raw(router.port)
        body.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"model\": ")
        assert status_line(body).endswith("408 Request Timeout")
        body.close()
        # A well-behaved request on a kept-alive connection is not cut by the header clock.
        ok = raw(router.port)
        for _ in range(2):
            ok.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_line(ok).endswith("200 OK")
            time.sleep(2)  # idle longer than header_timeout between requests
        ok.close()
        # One address holds at most max_client_connections.
        held = [raw(router.port) for _ in range(4)]
        for s in held:  # each one answered: the router has counted it (and its header clock is off)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_line(s).endswith("200 OK")
        extra = raw(router.port)
        line = status_line(extra)
        assert line.endswith("429 Too Many Requests"), line
        extra.close()
        for s in held:
            s.close()
        wait_until(lambda: call(router.url + "/health")[0] == 200, 10, "the count to go down again")
        assert call(router.url + "/v1/chat/completions",
                    {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})[0] == 200


def slow_stream(port: int, body: dict) -> socket.socket:
    """A streamed request from a client with a tiny receive buffer, which then stops reading."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    payload = json.dumps({**body, "stream": True}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    got = s.recv(64)
    assert got.startswith(b"HTTP/1.1 200"), got
    return s


def test_slow_readers_neither_stall_others_nor_grow_the_router(tmp_path: Path, tiny_dir: Path, llama_server: Path):
    """Twelve clients stop reading long streams (about 1 MB each if the router kept
    reading): backpressure holds them at the child, the router's memory stays flat,
    and the model's other slot keeps serving everyone else."""
    readers = 12
    command = child_command(llama_server, ctx=8192 * (readers + 1))[:-2]  # without its "-np 1"
    cfg = write_config(tmp_path / "c.yaml", {"tiny-a": {"path": str(tiny_dir / "tiny-a.gguf")}},
                       router={"kv_persistence": False},
                       spawn={"command": [*command, "-np", str(readers + 1)]})
    with RouterProcess(cfg, tmp_path / "router.log") as router:
        chat = {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}]}
        assert call(router.url + "/v1/chat/completions", {**chat, "max_tokens": 1}, timeout=60)[0] == 200
        rss_before = router.ps.memory_info().rss
        stalled = [slow_stream(router.port, {**chat, "max_tokens": 8000, "ignore_eos": True})
                   for _ in range(readers)]
        peak, took = 0, []
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            status, body = call(router.url + "/v1/chat/completions", {**chat, "max_tokens": 8}, timeout=30)
            assert status == 200, body
            took.append(time.monotonic() - t0)
            peak = max(peak, router.ps.memory_info().rss)
            time.sleep(0.2)
        for s in stalled:
            s.close()
        assert max(took) < 3, took  # nobody waited behind the stalled readers
        # Reading on regardless (no backpressure) grew it by about 7 MiB here; bounded, under 1 MiB.
        assert peak - rss_before < 3 * 1024 * 1024, (rss_before, peak)
        assert call(router.url + "/v1/chat/completions", {**chat, "max_tokens": 4}, timeout=30)[0] == 200

