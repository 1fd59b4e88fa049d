"""Request captures for debugging (llama-swap's `captureBuffer`): the last requests
to models and their replies, kept in memory when `router.capture_bytes` is set.

Off by default (`0`): then the middleware costs one settings lookup per
request. On, each request to a route that names a model (declared
`Models.NAMED`) is captured: its method, path, headers and the body its
model's server received (router/http/proxy.py feeds what it relays: the body
after the router's own changes, the reply's status, headers and bytes as they
pass), or the router's own answer when it never reached a server. Each body
is cut at BODY_MAX (or a quarter of the budget); the store drops the oldest
captures to stay within `capture_bytes` in all. What could hold a secret is
redacted before a capture is stored: the `Authorization`, `x-api-key`,
`X-Admin-Token`, `Proxy-Authorization` and cookie headers, and every key the
catalogue holds (API keys, the admin token, external models' and peers'
keys) wherever it appears. Admins read them at GET /admin/captures
(router/api/captures.py).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from router.catalogue.config import ApiKey, Config
from router.http.access import ADMIN, Models, access_of
from router.http.app_keys import MANAGER, REQUEST_ID, ROUTER_SETTINGS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY_MAX = 64 * 1024  # bytes of one body kept, at most
REDACTED = "[REDACTED]"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "x-admin-token", "cookie",
                            "set-cookie"})
_OVERHEAD = 512  # bytes counted per capture for what is not a body (headers, path...)


class Capture:
    """One request and its reply, as far as they went; bounded by `body_max` per body."""

    def __init__(self, request: web.Request, body_max: int) -> None:
        self.id = 0  # given by the store
        self.time = time.time()
        self.request_id = request.get(REQUEST_ID, "")
        self.method = request.method
        self.path = request.path_qs
        self.req_headers = dict(request.headers)
        self.body_max = body_max
        self.model: str | None = request.query.get("model")
        self.req_body: bytes | None = None  # what the model's server received, else what the client sent
        self.req_bytes = 0
        self.relayed = False
        self.status: int | None = None
        self.resp_headers: dict[str, str] = {}
        self.resp_body = bytearray()
        self.resp_bytes = 0

    def sent(self, body: bytes | None, status: int, headers: Mapping[str, str]) -> None:
        """What was relayed to the model's server, and the head of its reply."""
        self.relayed = True
        self._request_body(body or b"")
        self.status, self.resp_headers = status, dict(headers)

    def reply(self, data: bytes) -> None:
        """Bytes of the reply as they reach the client (kept up to body_max, counted in full)."""
        self.resp_bytes += len(data)
        room = self.body_max - len(self.resp_body)
        if room > 0:
            self.resp_body += data[:room]

    def _request_body(self, body: bytes) -> None:
        self.req_bytes = len(body)
        self.req_body = body[:self.body_max]

    def finish(self, client_body: bytes | None, resp: web.StreamResponse | None, status: int) -> None:
        """After the handler: the client's body where none was relayed, and the router's own answer."""
        if client_body is not None:
            self.model = self.model or _model_in(client_body, self.body_max)
            if self.req_body is None:
                self._request_body(client_body)
        if not self.relayed or self.status is None:
            self.status = status
            if resp is not None:
                self.resp_headers = dict(resp.headers)
                if isinstance(resp, web.Response) and isinstance(resp.body, bytes):
                    self.reply(resp.body)
        elif resp is not None and resp.status != self.status:
            self.status = resp.status  # the router answered otherwise (an error inside a stream...)

    @property
    def size(self) -> int:
        return len(self.req_body or b"") + len(self.resp_body) + _OVERHEAD

    def redact(self, secrets: Iterable[bytes]) -> None:
        secrets = [s for s in secrets if s]
        self.req_headers = _headers(self.req_headers, secrets)
        self.resp_headers = _headers(self.resp_headers, secrets)
        self.path = _scrub(self.path.encode(), secrets).decode("utf-8", "replace")
        if self.req_body:
            self.req_body = _scrub(self.req_body, secrets)
        if self.resp_body:
            self.resp_body = bytearray(_scrub(bytes(self.resp_body), secrets))

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "time": round(self.time, 3), "request_id": self.request_id, "model": self.model,
                "method": self.method, "path": self.path, "status": self.status,
                "req_bytes": self.req_bytes, "resp_bytes": self.resp_bytes,
                "truncated": self.req_bytes > len(self.req_body or b"") or self.resp_bytes > len(self.resp_body)}

    def to_json(self) -> dict[str, Any]:
        """llama-swap's capture (`req_path`, `req_headers`, `req_body`, `resp_headers`, `resp_body`) and
        what a cut body needs said: its full size and whether it was cut; a body that is not UTF-8 text
        is base64 (`*_encoding`)."""
        out = {**self.summary(), "req_path": self.path, "req_headers": self.req_headers,
               "resp_headers": self.resp_headers, "relayed": self.relayed}
        for name, data, total in (("req", self.req_body, self.req_bytes), ("resp", bytes(self.resp_body),
                                                                           self.resp_bytes)):
            text, encoding = _text(data)
            out[f"{name}_body"] = text
            if encoding:
                out[f"{name}_body_encoding"] = encoding
            out[f"{name}_body_truncated"] = data is not None and total > len(data)
        return out


class CaptureStore:
    """The captures, oldest first, within a byte budget (the newest is kept)."""

    def __init__(self) -> None:
        self._captures: deque[Capture] = deque()
        self._ids = itertools.count(1)
        self.used = 0

    def add(self, capture: Capture, limit: int) -> None:
        if capture.size > limit:
            return
        capture.id = next(self._ids)
        self._captures.append(capture)
        self.used += capture.size
        self.trim(limit)

    def trim(self, limit: int) -> None:
        while self._captures and self.used > limit:
            self.used -= self._captures.popleft().size

    def newest_first(self) -> list[Capture]:
        return list(reversed(self._captures))

    def get(self, capture_id: int) -> Capture | None:
        return next((c for c in self._captures if c.id == capture_id), None)


CAPTURE = web.RequestKey("capture", Capture)
CAPTURES = web.AppKey("captures", CaptureStore)


def body_max(limit: int) -> int:
    return max(1, min(BODY_MAX, limit // 4))


def catalogue_secrets(config: Config) -> list[bytes]:
    """Every key the catalogue holds: they are redacted wherever a capture shows them."""
    r = config.router
    found = [r.admin_token, *(k.key if isinstance(k, ApiKey) else k for k in r.api_keys),
             *(m.api_key for m in config.models.values()), *(p.api_key for p in config.peers.values())]
    return sorted({s.encode() for s in found if s}, key=len, reverse=True)  # a key inside a longer one: after it


@web.middleware
async def capture_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Capture a request to a model (when router.capture_bytes is set); see the module's docstring."""
    app = request.app  # the main application's (an /admin request's is its own: never captured)
    store = app.get(CAPTURES)
    if store is None:
        return await handler(request)
    limit = app[ROUTER_SETTINGS]().capture_bytes
    if store.used > limit:
        store.trim(limit)  # the budget shrank, or captures were turned off (a reload)
    if not limit:
        return await handler(request)
    access = access_of(request)
    if access.models is not Models.NAMED or access.role == ADMIN:
        return await handler(request)
    capture = request[CAPTURE] = Capture(request, body_max(limit))
    resp: web.StreamResponse | None = None
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except asyncio.CancelledError:
        status = 499  # the client left
        raise
    except Exception as e:  # an HTTPError or aiohttp's HTTPException: its status
        status = getattr(e, "status", 500)
        raise
    finally:
        client_body = await request.read() if not request.can_read_body else None  # read already: no wait
        capture.finish(client_body, resp, status)
        manager = app.get(MANAGER)
        capture.redact(catalogue_secrets(manager.config) if manager is not None else [])
        store.add(capture, limit)


def _headers(headers: Mapping[str, str], secrets: list[bytes]) -> dict[str, str]:
    return {k: REDACTED if k.lower() in SECRET_HEADERS else
            _scrub(v.encode("utf-8", "surrogateescape"), secrets).decode("utf-8", "replace")
            for k, v in headers.items()}


def _scrub(data: bytes, secrets: list[bytes]) -> bytes:
    for secret in secrets:
        if secret in data:
            data = data.replace(secret, REDACTED.encode())
    return data


def _text(data: bytes | None) -> tuple[str | None, str | None]:
    if data is None:
        return None, None
    for cut in range(4):  # a body cut inside a character is still text
        try:
            return data[:len(data) - cut].decode("utf-8"), None
        except UnicodeDecodeError:
            continue
    return base64.b64encode(data).decode(), "base64"


def _model_in(body: bytes, most: int) -> str | None:
    if not body or len(body) > most or not body.lstrip().startswith(b"{"):
        return None
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return None
    return model if isinstance(model, str) else None
