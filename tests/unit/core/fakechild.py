"""A child process that is only a Python object: the manager's tests tell it
to become ready, fail to load, crash, or hang on stop, and the swap, crash
and stop paths run in milliseconds without a subprocess."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from router.backend.child import EventSink, LoadError
from router.backend.launch import LaunchPlan
from router.backend.logring import LogRing
from router.upstream.client import ChildClient

_pids = itertools.count(90000)


@dataclass
class Behaviour:
    load: str = "ready"  # "ready" | "fail" | "oom" (fails out of memory once) | "hold" (ready when released)
    stop: str = "exit"  # "exit" | "hang" (ignores the polite stop; killed at the timeout)
    load_delay: float = 0.0


@dataclass
class FakeChild:
    name: str
    plan: LaunchPlan
    port: int
    logs: LogRing
    on_event: EventSink
    behaviour: Behaviour
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    release_load: asyncio.Event = field(default_factory=asyncio.Event)
    ready_info: dict[str, Any] = field(default_factory=dict)
    progress: float | None = None
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    stopping: bool = False
    returncode: int | None = None
    pid: int | None = None
    killed: bool = False
    stop_timeouts: list[float] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    report: list[str] = field(default_factory=list)  # lines it prints once ready (buffer sizes...)

    def own_log(self) -> list[str]:
        return list(self.report)

    async def start(self) -> None:
        self.pid = next(_pids)
        self.logs.append(f"{self.name}: starting")
        self.on_event("log", {"line": f"{self.name}: starting"})

    async def wait_ready(self, client: ChildClient, timeout: float) -> None:
        await asyncio.sleep(self.behaviour.load_delay)
        if self.behaviour.load == "oom":
            self.behaviour.load = "ready"  # the next try has room
            self._exit(1)
            raise LoadError(f"model {self.name!r} exited with code 1 while loading",
                            ["ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size "
                             "1073741824"], 1)
        if self.behaviour.load == "fail":
            self.logs.append("error: out of memory")
            self._exit(1)
            raise LoadError(f"model {self.name!r} exited with code 1 while loading", ["error: out of memory"], 1)
        if self.behaviour.load == "hold":
            await self.release_load.wait()
        self.progress = 1.0
        self.ready_at = time.time()
        self.ready.set()

    def crash(self, code: int = -11) -> None:
        """The process dies on its own."""
        self._exit(code)

    async def stop(self, timeout: float) -> int | None:
        self.stopping = True
        self.stop_timeouts.append(timeout)
        if self.behaviour.stop == "hang":
            await asyncio.sleep(timeout)
            await self.kill()
        elif self.returncode is None:
            self._exit(0)
        return self.returncode

    async def kill(self) -> None:
        if self.returncode is None:
            self.killed = True
            self._exit(-9)

    def _exit(self, code: int) -> None:
        self.returncode = code
        self.exited.set()


class FakeFactory:
    """The manager's child factory: makes FakeChild objects, keeps each one made."""

    def __init__(self) -> None:
        self.made: list[FakeChild] = []
        self.behaviours: dict[str, Behaviour] = {}

    def __call__(self, name: str, plan: LaunchPlan, port: int, logs: LogRing, on_event: EventSink) -> FakeChild:
        child = FakeChild(name, plan, port, logs, on_event, self.behaviours.get(name, Behaviour()))
        self.made.append(child)
        return child

    def of(self, name: str) -> list[FakeChild]:
        return [c for c in self.made if c.name == name]

    def alive(self) -> list[str]:
        return [c.name for c in self.made if c.returncode is None]
