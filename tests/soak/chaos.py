"""The soak's chaos: while the load runs, things go wrong on purpose, in a
rotation so that a short run sees each of them: a child SIGKILLed, a child
frozen (SIGSTOP) for longer than the router's read_timeout, the KV slot
folder's disk filled up, and the catalogue rewritten (valid and invalid
versions) followed by SIGHUP. Every action is recorded with its time and
target: the invariants use it to tell errors the chaos caused from errors
the router caused on its own."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from tests.soak.catalogue import Catalogue
from tests.soak.slotdir import SlotFolder

# Each kind once in the first five, so that even a short run sees them all.
ROTATION = ("kill", "reload_invalid", "sigstop", "reload", "fill_disk", "kill", "reload", "kill", "reload_invalid",
            "fill_disk", "kill", "reload")


@dataclass
class Action:
    kind: str  # kill | sigstop | fill_disk | reload | reload_invalid
    started: float
    ended: float = 0.0
    pid: int | None = None
    model: str | None = None
    detail: str = ""


@dataclass
class Chaos:
    router_pid: int
    children: Callable[[], list[psutil.Process]]
    slots: SlotFolder
    catalogue: Catalogue
    read_timeout: float
    seed: int
    every: tuple[float, float] = (3.0, 7.0)
    actions: list[Action] = field(default_factory=list)

    async def run(self, until: float) -> None:
        """Act every few seconds until `until`, then put the catalogue back as it was."""
        rng = random.Random(self.seed)
        step = 0
        try:
            while time.time() + self.every[0] < until:
                await asyncio.sleep(rng.uniform(*self.every))
                kind = ROTATION[step % len(ROTATION)]
                step += 1
                await getattr(self, "_" + kind)(rng)
        finally:
            await self._reload_with(self.catalogue.original(), "reload", "back to the original catalogue")

    def _child(self, rng: random.Random) -> tuple[psutil.Process, str] | None:
        """A running model child (not a zombie) and its model name."""
        live = []
        for p in self.children():
            try:
                if p.status() != psutil.STATUS_ZOMBIE and "--model" in p.cmdline():
                    live.append(p)
            except psutil.Error:
                continue
        if not live:
            return None
        p = rng.choice(live)
        try:
            cmd = p.cmdline()
        except psutil.Error:
            return None
        return p, cmd[cmd.index("--alias") + 1] if "--alias" in cmd else "?"

    async def _kill(self, rng: random.Random) -> None:
        found = self._child(rng)
        if found is None:
            return
        p, model = found
        action = Action("kill", time.time(), pid=p.pid, model=model)
        try:
            p.send_signal(signal.SIGKILL)  # psutil refuses a pid that was reused meanwhile
        except psutil.Error as e:
            action.detail = f"gone already: {e}"
        action.ended = time.time()
        self.actions.append(action)

    async def _sigstop(self, rng: random.Random) -> None:
        """Freeze a child for longer than read_timeout: its request in flight must time out
        with a well-formed error, and the router must not wait on it for ever."""
        found = self._child(rng)
        if found is None:
            return
        p, model = found
        action = Action("sigstop", time.time(), pid=p.pid, model=model)
        self.actions.append(action)
        try:
            p.suspend()
            await asyncio.sleep(self.read_timeout + 2.0)
        except psutil.Error as e:
            action.detail = f"gone: {e}"
        finally:
            try:
                p.resume()
            except psutil.Error:
                action.detail = action.detail or "stopped by the router while frozen"
            action.ended = time.time()

    async def _fill_disk(self, rng: random.Random) -> None:
        """Fill the slot folder's tmpfs for a few seconds: saves fail (ENOSPC), the old files stay."""
        if not self.slots.mounted:
            return
        action = Action("fill_disk", time.time())
        self.actions.append(action)
        try:
            written = await asyncio.to_thread(self.slots.fill)
            action.detail = f"{written} bytes"
            await asyncio.sleep(rng.uniform(4.0, 8.0))
        finally:
            await asyncio.to_thread(self.slots.free)
            action.ended = time.time()

    async def _reload(self, rng: random.Random) -> None:
        name, text = self.catalogue.valid_variant(rng)
        await self._reload_with(text, "reload", name)

    async def _reload_invalid(self, rng: random.Random) -> None:
        name, text = self.catalogue.invalid_variant(rng)
        await self._reload_with(text, "reload_invalid", name)

    async def _reload_with(self, text: str, kind: str, what: str) -> None:
        action = Action(kind, time.time(), detail=what)
        await asyncio.to_thread(self.catalogue.write, text)
        try:
            os.kill(self.router_pid, signal.SIGHUP)
        except ProcessLookupError:
            action.detail += " (router gone)"
        action.ended = time.time()
        self.actions.append(action)
        await asyncio.sleep(0.5)  # one reload at a time: the next SIGHUP reads the next file
