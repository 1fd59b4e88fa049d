"""A model's server that may outlive the command that started it: a container
(`docker run`, `podman run -d`), a daemon that forks away. Such a model has a
`stop_command` (llama-swap's `cmdStop`) and usually a fixed `port`.

The router never loses track of it: the server counts as running while its
port answers, not while the command runs. A command that exits 0 once the
server is up (`docker run -d`) leaves it running, watched on its port; one
that fails before the server is ready fails the load. To stop it the router
runs the stop command (no shell; `${PID}` is the started command's process
while it runs), ends the started command if it is still there, then waits
for the port to be free, each within the stop timeout, and logs each step to
the router's log and the model's own (its /logs). A forced exit (kill) runs
the stop command too, briefly: a container must not outlive the router.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from router.backend.child import Child, ChildProcess, EventSink, _die_with_parent
from router.backend.launch import LaunchPlan
from router.backend.logring import LogRing

log = logging.getLogger("router.child")

WATCH_S = 1.0  # how often the port of a server whose command has exited is tried
MISSES = 2  # tries in a row without an answer before the server counts as gone
KILL_STOP_S = 5.0  # the stop command's time on a forced exit
CONNECT_S = 0.5  # one try at a port (on this machine: refused at once, or accepted)


async def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on the port now."""
    try:
        async with asyncio.timeout(CONNECT_S):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


def make_child(name: str, plan: LaunchPlan, port: int, logs: LogRing, on_event: EventSink) -> ChildProcess:
    """The manager's default child factory: a ContainerChild for a model with a stop_command."""
    if plan.stop_command:
        return ContainerChild(name, plan, port, logs, on_event)
    return Child(name, plan, port, logs, on_event)


class ContainerChild(Child):
    """A Child whose life is its server's, seen on its port (see the module's docstring)."""

    def __init__(self, name: str, plan: LaunchPlan, port: int, logs: LogRing, on_event: EventSink | None = None):
        super().__init__(name, plan, port, logs, on_event)
        self._stopped_code: int | None = None

    @property
    def pid(self) -> int | None:
        """The started command's, while it runs (the server's own is the container's business)."""
        return self.proc.pid if self.proc and self.proc.returncode is None else None

    @property
    def returncode(self) -> int | None:
        """None while the server lives, whatever became of the command that started it."""
        if not self.exited.is_set():
            return None
        return self.proc.returncode if self.proc else None

    async def _watch_exit(self) -> None:
        assert self.proc
        await self.proc.wait()
        await asyncio.wait(self._readers, timeout=1.0)  # its last lines
        code = self.proc.returncode
        if self.stopping or self.exited.is_set():
            return  # stop() or kill() ends the watch
        if code != 0 and not self.ready.is_set():
            self.exited.set()  # the start failed: wait_ready says so, with its output
            return
        self._note(f"its command exited with code {code}; the server is watched on port {self.port}")
        while not self.ready.is_set():  # a server still starting: wait_ready decides
            if self.stopping or self.exited.is_set():
                return
            await asyncio.sleep(WATCH_S)
        misses = 0
        while not (self.stopping or self.exited.is_set()):
            misses = 0 if await port_answers(self.port) else misses + 1
            if misses >= MISSES:
                self._note(f"the server on port {self.port} is gone")
                self.exited.set()
                return
            await asyncio.sleep(WATCH_S)

    async def stop(self, timeout: float) -> int | None:
        """The stop command, the started command's end, then the port free: each within `timeout`."""
        self.stopping = True
        if self.exited.is_set():
            return self.proc.returncode if self.proc else None
        await self._run_stop_command(timeout)
        await self._end_command(timeout)
        t0 = time.monotonic()
        deadline = t0 + timeout
        while await port_answers(self.port) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if await port_answers(self.port):
            self._note(f"port {self.port} still answers {timeout:g} s after the stop command: its server may "
                       "still be running", logging.ERROR)
        else:
            self._note(f"port {self.port} is free ({time.monotonic() - t0:.1f} s after the stop command)")
        self.exited.set()
        return self.proc.returncode if self.proc else None

    async def kill(self) -> None:
        """A forced end: the started command killed, and the stop command run briefly."""
        if self.exited.is_set():
            return
        self.stopping = True
        await super().kill()
        await self._run_stop_command(KILL_STOP_S)
        self.exited.set()

    async def _run_stop_command(self, timeout: float) -> None:
        pid = self.pid
        if pid is None and any("${PID}" in a for a in self.plan.stop_command):
            self._note("the stop command names ${PID} but the started command has exited: not run",
                       logging.WARNING)
            return
        argv = [a.replace("${PID}", str(pid)) for a in self.plan.stop_command]
        t0 = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=self.plan.env, preexec_fn=_die_with_parent)
        except OSError as e:
            self._note(f"the stop command {argv[0]!r} could not run: {e.strerror or e}", logging.ERROR)
            return
        try:
            async with asyncio.timeout(timeout):
                out, _ = await proc.communicate()
        except TimeoutError:
            _killpg(proc.pid)
            await proc.wait()
            self._note(f"the stop command did not finish within {timeout:g} s: killed", logging.ERROR)
            return
        for line in out.decode("utf-8", "replace").splitlines()[-20:]:
            self._note(f"stop command: {line}")
        level = logging.INFO if proc.returncode == 0 else logging.WARNING
        self._note(f"the stop command {' '.join(argv)!r} exited with code {proc.returncode} in "
                   f"{time.monotonic() - t0:.1f} s", level)

    async def _end_command(self, timeout: float) -> None:
        """The started command (an attached `docker run` exits once its container stops): waited
        for, then SIGTERM, then SIGKILL, to its process group."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            await asyncio.wait_for(proc.wait(), timeout)
            return
        except TimeoutError:
            pass
        self._note(f"its command (pid {proc.pid}) still runs after the stop command: SIGTERM", logging.WARNING)
        _killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            _killpg(proc.pid)
            await proc.wait()

    def _note(self, message: str, level: int = logging.INFO) -> None:
        """A step of this server's life, in the router's log and the model's own."""
        log.log(level, "[%s] %s", self.name, message)
        self.logs.append(f"[llama-router] {message}")


def _killpg(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
