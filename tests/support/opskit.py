"""Helpers for the operations tests: tiny catalogues, HTTP with bounded
waits, and a background reader for server-sent events."""

from __future__ import annotations

import http.client
import itertools
import json
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.support.http import wait_until as wait_until  # the one poll-until, re-exported
from tests.support.routerproc import RouterProcess, child_command, write_config

TIMEOUT = 30


def tiny_catalogue(tiny_dir: Path, *names: str, group: str | None = None,
                   **extra: dict[str, Any]) -> dict[str, Any]:
    """`names` from the tiny_dir fixture, each with optional extra keys; with
    `group` they may run side by side (a model without a group runs alone)."""
    out = {n: {"path": str(tiny_dir / f"{n}.gguf"), **extra.get(n.replace("-", "_"), {})} for n in names}
    if group:
        for entry in out.values():
            entry.setdefault("group", group)
    return out


def tiny_router(tmp_path: Path, llama_server: Path, models: dict[str, Any], *args: str,
                env: dict[str, str] | None = None, **router: Any) -> RouterProcess:
    cfg = write_config(tmp_path / "config.yaml", models, router={"watch_config": False, **router},
                       spawn={"command": child_command(llama_server)})
    return RouterProcess(cfg, tmp_path / "router.log", *args, env=env)


def chat(url: str, model: str, headers: dict[str, str] | None = None, **body: Any) -> requests.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **body}
    return requests.post(url + "/v1/chat/completions", json=payload, headers=headers, timeout=TIMEOUT)




def model_state(url: str, name: str, headers: dict[str, str] | None = None) -> str:
    data = requests.get(url + "/v1/models", headers=headers, timeout=TIMEOUT).json()["data"]
    return next(m["status"]["value"] for m in data if m["id"] == name)


class SSEReader:
    """Reads `data:` events of one stream in a thread; stop by leaving the `with`."""

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        parts = urllib.parse.urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self._conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        self._resp = self._conn.getresponse()
        if self._resp.status != 200:
            raise AssertionError(f"{url}: HTTP {self._resp.status}: {self._resp.read()[:300]!r}")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in self._resp:
                if line.startswith(b"data: "):
                    self.events.put(json.loads(line[6:]))
        except (OSError, ValueError, http.client.HTTPException):
            pass

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
        """The first event matching; events before it are consumed."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no matching event in time")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if match(event):
                return event

    def __enter__(self) -> SSEReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader at once
        except (OSError, AttributeError):
            pass
        self._thread.join(5)
        self._conn.close()


def has_pair(argv: list[str], flag: str, value: str) -> bool:
    """`flag value` appear next to each other in a command line."""
    return any(a == flag and b == value for a, b in itertools.pairwise(argv))
