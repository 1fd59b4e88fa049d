"""One backend child process: start, readiness, logs, stop.

A child is ready when it says so on the native llama-server protocol
(`cmd_child_to_router:state:` lines on stdout) or when its health endpoint
answers 200, whichever comes first. It runs in its own process group and
gets PR_SET_PDEATHSIG, so it dies with the router even on SIGKILL; a
llama-server child also exits on stdin EOF.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from router.backend.launch import LaunchPlan
from router.backend.logring import LogRing
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamError

log = logging.getLogger("router.child")

STATE_PREFIX = b"cmd_child_to_router:state:"
EXIT_COMMAND = b"cmd_router_to_child:exit\n"
_PR_SET_PDEATHSIG = 1
HEALTH_POLL_TIMEOUT_S = 2.0  # one try at the health endpoint


class LoadError(RuntimeError):
    """The child could not become ready; carries its last log lines."""

    def __init__(self, message: str, log_tail: list[str] | None = None, exit_code: int | None = None,
                 bind_failed: bool = False):
        self.log_tail = log_tail or []
        self.exit_code = exit_code
        self.bind_failed = bind_failed
        tail = "\n".join(self.log_tail[-12:])
        super().__init__(f"{message}\n{tail}" if tail else message)


def _die_with_parent() -> None:
    """Runs in the child between fork and exec."""
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


def free_port(first: int, last: int, avoid: set[int], start: int | None = None) -> int:
    """A port in [first, last] that binds now; the child may still lose a race for it."""
    span = last - first + 1
    offset = (start if start is not None else int(time.monotonic() * 1000)) % span
    for i in range(span):
        port = first + (offset + i) % span
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LoadError(f"no free port in range {first}-{last}")


EventSink = Callable[[str, dict[str, Any]], None]


class ChildProcess(Protocol):
    """What the manager needs of a child: the seam where tests put a fake
    (tests/unit/core/fakechild.py) to drive swaps, crashes and stops in milliseconds."""

    name: str
    plan: LaunchPlan
    port: int
    ready: asyncio.Event
    exited: asyncio.Event
    ready_info: dict[str, Any]
    progress: float | None
    started_at: float
    ready_at: float | None
    stopping: bool

    @property
    def pid(self) -> int | None: ...
    @property
    def base_url(self) -> str: ...
    @property
    def returncode(self) -> int | None: ...
    async def start(self) -> None: ...
    def own_log(self) -> list[str]: ...
    async def wait_ready(self, client: ChildClient, timeout: float) -> None: ...
    async def stop(self, timeout: float) -> int | None: ...
    async def kill(self) -> None: ...


ChildFactory = Callable[[str, LaunchPlan, int, LogRing, EventSink], ChildProcess]


class Child:
    """A started backend process. `await start()`, then `await wait_ready()`."""

    def __init__(self, name: str, plan: LaunchPlan, port: int, logs: LogRing,
                 on_event: EventSink | None = None):
        self.name, self.plan, self.port = name, plan, port
        self.proc: asyncio.subprocess.Process | None = None
        self.logs = logs
        self._log_mark = logs.total
        self.ready = asyncio.Event()
        self.ready_info: dict[str, Any] = {}
        self.progress: float | None = None
        self.started_at = time.time()
        self.ready_at: float | None = None
        self.stopping = False
        self._on_event = on_event or (lambda kind, data: None)
        self._readers: list[asyncio.Task[None]] = []
        self.exited = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def own_log(self) -> list[str]:
        """The lines this child printed (of those the model's ring still holds)."""
        return self.logs.since(self._log_mark)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.plan.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.plan.env,
            limit=1 << 20,
            preexec_fn=_die_with_parent,
        )
        log.info("[%s] started pid %d on port %d: %s", self.name, self.proc.pid, self.port,
                 " ".join(self.plan.argv))
        assert self.proc.stdout and self.proc.stderr
        self._readers = [
            asyncio.create_task(self._read(self.proc.stdout, native=self.plan.native)),
            asyncio.create_task(self._read(self.proc.stderr, native=False)),
        ]
        self._exit_watch = asyncio.create_task(self._watch_exit())

    async def _watch_exit(self) -> None:
        assert self.proc
        await self.proc.wait()
        # Let the readers drain what the child printed last.
        await asyncio.wait(self._readers, timeout=1.0)
        self.exited.set()

    async def _read(self, stream: asyncio.StreamReader, native: bool) -> None:
        while True:
            try:
                line = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue  # an over-long line: skip it, keep reading
            if not line:
                return
            if native and line.startswith(STATE_PREFIX):
                self._on_state(line[len(STATE_PREFIX):])
                continue
            text = line.decode("utf-8", "replace").rstrip()
            self.logs.append(text)
            self._on_event("log", {"line": text})
            log.info("[%s] %s", self.name, text)

    def _on_state(self, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
            state, payload = msg.get("state"), msg.get("payload") or {}
        except (ValueError, AttributeError):
            return
        if state == "loading" and isinstance(payload, dict):
            value = payload.get("value")
            if isinstance(value, (int, float)):
                self.progress = float(value)
            self._on_event("loading", payload)
        elif state == "ready":
            self.ready_info = payload if isinstance(payload, dict) else {}
            self._mark_ready()

    def _mark_ready(self) -> None:
        if not self.ready.is_set():
            self.ready_at = time.time()
            self.progress = 1.0
            self.ready.set()

    async def _poll_health(self, client: ChildClient) -> None:
        delay = 0.05
        while not self.ready.is_set():
            try:
                answer = await client.get(self.base_url, self.plan.health_endpoint, timeout=HEALTH_POLL_TIMEOUT_S)
                if answer.status == 200:
                    self._mark_ready()
                    return
            except (TimeoutError, UpstreamError):
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    async def wait_ready(self, client: ChildClient, timeout: float) -> None:
        """Return when ready; raise LoadError if it exits, or times out (then it is killed).
        `client` polls the health endpoint."""
        poll = asyncio.create_task(self._poll_health(client))
        ready = asyncio.create_task(self.ready.wait())
        exited = asyncio.create_task(self.exited.wait())
        try:
            await asyncio.wait({ready, exited}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (poll, ready, exited):
                t.cancel()
        if self.ready.is_set() and self.returncode is None:
            return
        if self.exited.is_set() or self.returncode is not None:
            await asyncio.wait_for(self.exited.wait(), 2)
            tail = self.logs.since(self._log_mark)
            bind = any(("bind" in line.lower() and "port" in line.lower()) or "address already in use" in line.lower()
                       for line in tail[-20:])
            raise LoadError(f"model {self.name!r} exited with code {self.returncode} while loading",
                            tail, self.returncode, bind_failed=bind)
        await self.kill()
        raise LoadError(f"model {self.name!r} was not ready within {timeout:g} s", self.logs.since(self._log_mark))

    async def stop(self, timeout: float) -> int | None:
        """Exit command, then SIGTERM to the group, then SIGKILL after `timeout`."""
        if not self.proc:
            return None
        self.stopping = True
        if self.proc.returncode is None and self.plan.native and self.ready.is_set():
            try:
                assert self.proc.stdin
                self.proc.stdin.write(EXIT_COMMAND)
                await asyncio.wait_for(self.proc.stdin.drain(), 1)
                await asyncio.wait_for(self.proc.wait(), min(2.0, timeout))
            except (TimeoutError, ConnectionError, BrokenPipeError, OSError):
                pass
        if self.proc.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                log.warning("[%s] did not stop within %g s; killing pid %d", self.name, timeout, self.proc.pid)
        if self.proc.returncode is None:
            await self.kill()
        await asyncio.wait_for(self.exited.wait(), 5)
        return self.proc.returncode

    async def kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            self._signal(signal.SIGKILL)
            await self.proc.wait()

    def _signal(self, sig: int) -> None:
        assert self.proc
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            self.proc.send_signal(sig)
