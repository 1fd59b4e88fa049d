"""A model served by a server the router does not start (a catalogue entry with
`url`): a ChildProcess that starts nothing.

The manager hands it out like any child, so every route that relays to a
model (OpenAI, Anthropic, llama.cpp paths, swap progress...) reaches it the
same way: `base_url` is the server's root (https and a path allowed:
router/upstream/endpoint.py) and `plan.headers` carries its API key. It has
no process: `start` and `stop` do nothing, it is always ready, it never
exits. Whether it answers is its health check's business
(router/core/external.py), never the scheduler's: it takes no memory, no
place in a group, and is never evicted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from router.backend.launch import LaunchPlan
from router.catalogue.config import ModelSpec
from router.upstream.client import ChildClient
from router.upstream.endpoint import api_base, endpoint
from router.upstream.pool import UpstreamError

DEFAULT_HEALTH = "/v1/models"  # every OpenAI-compatible server has it


class ExternalServer:
    """A ChildProcess (backend/child.py) for a server that is already running."""

    def __init__(self, spec: ModelSpec) -> None:
        assert spec.url is not None
        self.name = spec.name
        self.url = spec.url
        headers = (("Authorization", f"Bearer {spec.api_key}"),) if spec.api_key else ()
        self.plan = LaunchPlan((), {}, spec.health_endpoint or DEFAULT_HEALTH, False, headers=headers)
        self._base = api_base(spec.url)
        self.port = endpoint(self._base).port
        self.ready = asyncio.Event()
        self.ready.set()
        self.exited = asyncio.Event()  # never set: the router does not own a process that could exit
        self.ready_info: dict[str, Any] = {}
        self.progress: float | None = 1.0
        self.started_at = time.time()
        self.ready_at: float | None = self.started_at
        self.stopping = False

    @property
    def pid(self) -> int | None:
        return None

    @property
    def base_url(self) -> str:
        return self._base

    @property
    def returncode(self) -> int | None:
        return None

    def own_log(self) -> list[str]:
        return []

    async def start(self) -> None:
        """Nothing to start: the server runs already."""

    async def check(self, client: ChildClient, timeout: float) -> str | None:
        """One health check: None when the server answers 200, else why not."""
        try:
            answer = await client.get(self.base_url, self.plan.health_endpoint, timeout=timeout,
                                      headers=dict(self.plan.headers))
        except TimeoutError:
            return f"no answer from {self.url} within {timeout:g} s"
        except UpstreamError as e:
            return str(e) or type(e).__name__
        if answer.status != 200:
            return f"{self.plan.health_endpoint} answered {answer.status}: {answer.text()[:200]}"
        return None

    async def wait_ready(self, client: ChildClient, timeout: float) -> None:
        """Always ready: a request goes to the server, which answers for itself."""

    async def stop(self, timeout: float) -> int | None:
        """Never stopped by the router."""
        return None

    async def kill(self) -> None:
        """Never killed by the router."""
