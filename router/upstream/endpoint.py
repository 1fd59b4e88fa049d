"""Where a server's base URL sends a request: host, port, TLS and the path its API
lives under.

A child's base URL is `http://127.0.0.1:PORT`; a server the router does not
start (a model's `url`, a peer) may be `https://host/api`, whose requests go
to `/api/v1/chat/completions`. Parsed once per URL (the relay asks for every
request).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # an IPv6 address without its brackets
    port: int
    tls: bool  # https
    root: str  # the path requests' paths are appended to: "" for a child

    def target(self, path: str) -> str:
        """The request target of `path` (with its query) on this server."""
        return self.root + path


@functools.lru_cache(maxsize=256)
def endpoint(base_url: str) -> Endpoint:
    """`http://127.0.0.1:8080` -> 127.0.0.1, 8080, plain, no root; `https://host/api` -> host, 443, TLS, /api."""
    parts = urlsplit(base_url)
    tls = parts.scheme == "https"
    return Endpoint(parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80), tls, parts.path.rstrip("/"))


def api_base(url: str) -> str:
    """A URL written as an OpenAI client's `base_url` (`https://openrouter.ai/api/v1`) as the
    server's root (`https://openrouter.ai/api`): a request for `/v1/chat/completions` keeps its
    path, and one for `/completion` or `/sdapi/v1/txt2img` goes beside it, as llama-swap's
    `proxy` URL does."""
    base = url.rstrip("/")
    return base[:-3] if base.endswith("/v1") else base
