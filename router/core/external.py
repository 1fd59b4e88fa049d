"""The catalogue's models that the router does not start (`url`): their servers,
their health, and the requests in flight to them.

They stand outside the scheduler on purpose: the scheduler decides which
models run and which must stop to make room, and none of that applies to a
server someone else runs (it takes none of the memory budget, belongs to no
group, is never evicted nor idle-unloaded). The manager hands out a lease on
one at once (ModelManager.acquire), with a negative ticket the scheduler never
sees, so every route reaches it as it reaches a child.

Health is checked in the background every CHECK_EVERY_S (and at once when
someone asks to load the model): `/v1/models` lists the result
(`status.value: external`, `healthy`, the last error). A failed check never
refuses a request: the server answers for itself, and a relay that cannot
reach it answers 502 naming it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from router.backend.external import ExternalServer
from router.catalogue.config import Config
from router.upstream.client import ChildClient

log = logging.getLogger("router.external")

CHECK_EVERY_S = 15.0
CHECK_TIMEOUT_S = 5.0


@dataclass
class Health:
    healthy: bool | None = None  # None: not checked yet
    checked_at: float | None = None
    error: str | None = None
    seconds: float | None = None  # how long the last check took


class ExternalModels:
    def __init__(self, config: Config, client: ChildClient) -> None:
        self.client = client
        self._servers: dict[str, ExternalServer] = {}
        self.health: dict[str, Health] = {}
        self._tickets = itertools.count(-1, -1)
        self._leases: dict[int, str] = {}
        self._in_flight: Counter[str] = Counter()
        self._checks: dict[str, asyncio.Task[Health]] = {}
        self.update(config)

    def update(self, config: Config) -> None:
        """The catalogue's `url` models now (a reload): a server whose settings did not change
        keeps its health; leases in flight on a removed one end as they are."""
        servers = {}
        for name, spec in config.models.items():
            if spec.url is None:
                continue
            server = ExternalServer(spec)
            old = self._servers.get(name)
            if old is not None and (old.url, old.plan) == (server.url, server.plan):
                server = old
            else:
                self.health[name] = Health()
            servers[name] = server
        self._servers = servers
        for name in [n for n in self.health if n not in servers]:
            del self.health[name]

    def __contains__(self, model: object) -> bool:
        return model in self._servers

    def get(self, model: str) -> ExternalServer | None:
        return self._servers.get(model)

    # ----- requests --------------------------------------------------------
    def enter(self, model: str) -> tuple[int, ExternalServer]:
        """A request to `model` begins: its ticket (negative) and its server."""
        ticket = next(self._tickets)
        self._leases[ticket] = model
        self._in_flight[model] += 1
        return ticket, self._servers[model]

    def leave(self, ticket: int) -> None:
        model = self._leases.pop(ticket, None)
        if model is not None:
            self._in_flight[model] -= 1
            if self._in_flight[model] <= 0:
                del self._in_flight[model]

    def in_flight(self, model: str) -> int:
        return self._in_flight.get(model, 0)

    # ----- health ----------------------------------------------------------
    def view(self, model: str) -> dict[str, Any] | None:
        """What the model list and /admin/status show: the server's address (without any
        user:password in it) and its last health check."""
        server = self._servers.get(model)
        if server is None:
            return None
        h = self.health.get(model) or Health()
        parts = urlsplit(server.url)
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        return {"url": shown, "healthy": h.healthy, "checked_at": h.checked_at, "error": h.error}

    async def check(self, model: str) -> Health:
        """Check one server now."""
        server = self._servers[model]
        t0 = time.monotonic()
        error = await server.check(self.client, CHECK_TIMEOUT_S)
        health = Health(error is None, time.time(), error, round(time.monotonic() - t0, 3))
        before = self.health.get(model)
        if model in self._servers:
            self.health[model] = health
        if before is None or before.healthy != health.healthy:
            if error is None:
                log.info("[%s] external server %s answers", model, server.url)
            else:
                log.warning("[%s] external server %s does not answer: %s", model, server.url, error)
        return health

    def check_soon(self, model: str) -> None:
        """Check in the background (a load request: the router has nothing to load)."""
        if model in self._servers and model not in self._checks:
            task = asyncio.ensure_future(self.check(model))
            self._checks[model] = task
            task.add_done_callback(lambda _: self._checks.pop(model, None))

    async def watch(self) -> None:
        """Check every server every CHECK_EVERY_S, for the router's life."""
        while True:
            await asyncio.gather(*(self.check(m) for m in list(self._servers)), return_exceptions=True)
            await asyncio.sleep(CHECK_EVERY_S)

    async def close(self) -> None:
        for task in list(self._checks.values()):
            task.cancel()
        await asyncio.gather(*self._checks.values(), return_exceptions=True)
