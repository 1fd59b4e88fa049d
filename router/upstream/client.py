"""The router's own calls to its children, each read whole: health polls
(backend/child.py), /props (core/manager.py), /slots listings, saves and
restores (core/kv_persistence.py), /metrics scrapes (api/metrics.py) and
stream lookups (ui/streams.py). Relayed requests go through the pool itself
(router/http/proxy.py); both share one UpstreamPool, so this layer is the one
client the router has to its children.

Each call takes a fresh connection, closed with the reply (the pool's
fresh-connection mode, as aiohttp's `force_close=True` connector did before):
these calls are seconds apart, and an idle kept-alive connection would hold
one of llama-server's few HTTP threads that a slot's request needs. Measured
against a real llama-server, each on a fresh connection, the router spends
about a third of the CPU aiohttp's ClientSession did: 115-170 us against
260-510 us per /health, 130-220 against 370-670 per /props (the 2-core
development machine, shared, 300-500 calls each). So aiohttp's client is not
used to reach children anywhere in the router.

`timeout` bounds a whole call, connect to last byte (aiohttp's `total`);
failures are the layer's own: UpstreamError (ConnectFailed, Disconnected,
BadReply, also for a body that is not JSON) or TimeoutError.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from router.upstream.endpoint import endpoint
from router.upstream.pool import BadReply, UpstreamPool


@dataclass(frozen=True, slots=True)
class Answer:
    """A child's complete reply: its status and body."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body parsed; BadReply when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError as e:  # UnicodeDecodeError is one too
            raise BadReply(f"the child's reply is not JSON: {e}") from None

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def host_port(base_url: str) -> tuple[str, int]:
    """`http://127.0.0.1:8080` -> ("127.0.0.1", 8080); an IPv6 host loses its brackets."""
    parts = urlsplit(base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class ChildClient:
    """Calls to children over `pool` (its headers, the cluster's secret, go with each)."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    async def get(self, base_url: str, path: str, *, timeout: float, headers: dict[str, str] | None = None) -> Answer:
        """`headers`: a server's own (an external model's API key)."""
        return await self._call("GET", base_url, path, headers or {}, None, timeout)

    async def post_json(self, base_url: str, path: str, payload: Any, *, timeout: float) -> Answer:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return await self._call("POST", base_url, path, {"Content-Type": "application/json"}, body, timeout)

    async def _call(self, method: str, base_url: str, path: str, headers: dict[str, str], body: bytes | None,
                    timeout: float) -> Answer:
        where = endpoint(base_url)  # a child's `http://127.0.0.1:PORT`, or an https server's root
        async with asyncio.timeout(timeout):
            reply = await self.pool.request(method, where.host, where.port, where.target(path), headers, body,
                                            connect_timeout=None, read_timeout=None, keep_alive=False,
                                            tls=where.tls)
            async with reply:
                return Answer(reply.status, await reply.read())
