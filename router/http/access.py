"""Who may talk to the router: API keys for the public API, a token for /admin.

Secrets are compared in constant time (hmac.compare_digest on bytes, every
key checked) and are never logged: a failed attempt logs the client address
and the path, not what it sent; a refused key is named by its place in
router.api_keys (`api_keys[2]`). The settings are read from the current
catalogue on every request, so a reload that rotates a key applies at once.

What a key may do (its role, its models, its limits) is decided in
http/api_keys.py; this middleware asks and answers. The key a request
came with is kept on it (API_KEY), so the routes that name a model can
answer 404 for a model the key may not use.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from router.catalogue.config import ApiKey, RouterSettings
from router.http.api_keys import ADMIN, Refusal, find_key, is_admin_path, route_refusal
from router.http.app_keys import API_KEY, KEY_LIMITS, PUBLIC_PAGES, ROUTER_SETTINGS
from router.http.errors import error_response

log = logging.getLogger("router.auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/health", "/v1/health"})
OPEN_PATHS |= {"/openapi.json"}  # describes the API, holds no secret (api/openapi.py)
# Event streams stay open for as long as a page is: they count against a key's rate when
# they open, never against its requests in flight.
EVENT_STREAMS = ("/models/sse", "/api/activity/stream", "/admin/download/events", "/logs/stream/")


def _bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def matches(candidate: str | None, secrets: Iterable[str]) -> bool:
    """True when `candidate` equals one of `secrets`; the time taken does not
    depend on where the first differing byte is, nor on which key matched."""
    if not candidate:
        return False
    given = candidate.encode("utf-8", "surrogateescape")
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(given, secret.encode("utf-8"))
    return found


@web.middleware
async def require_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[ROUTER_SETTINGS]()
    if is_admin_path(request.path):
        return await _admin(request, handler, settings)
    if not settings.api_keys or request.path in OPEN_PATHS or is_public_page(request):
        return await handler(request)
    presented = _bearer(request) or request.headers.get("x-api-key")
    found = find_key(presented, settings.api_keys)
    if found is None:
        log.warning("rejected request from %s to %s: %s API key", request.remote, request.path,
                    "wrong" if presented else "no")
        return error_response(401, "API key missing or wrong: send Authorization: Bearer <key> or "
                              "x-api-key", code="invalid_api_key",
                              headers={"WWW-Authenticate": 'Bearer realm="llama-router"'})
    index, key = found
    refusal = route_refusal(key, request.method, request.path, request.query)
    if refusal is not None:
        return _refuse(request, index, refusal)
    return await _within_limits(request, handler, index, key)


async def _admin(request: web.Request, handler: Handler, settings: RouterSettings) -> web.StreamResponse:
    """/admin: the admin token, or an API key with the admin role."""
    admin_keys = any(isinstance(k, ApiKey) and k.role == ADMIN for k in settings.api_keys)
    if not settings.admin_token and not admin_keys:
        return error_response(403, "admin disabled: set router.admin_token or --admin-token (or give an API key "
                              "role: admin)", code="admin_disabled")
    token = _bearer(request) or request.headers.get("X-Admin-Token") or request.headers.get("x-api-key")
    if settings.admin_token and matches(token, (settings.admin_token,)):
        return await handler(request)
    found = find_key(token, settings.api_keys) if admin_keys else None
    if found is not None and found[1].role == ADMIN:
        return await _within_limits(request, handler, *found)
    log.warning("rejected admin request from %s to %s: %s token", request.remote, request.path,
                "wrong" if token else "no")
    return error_response(401, "admin token missing or wrong: send Authorization: Bearer <token> "
                          f"or X-Admin-Token{' (or an API key with the admin role)' if admin_keys else ''}",
                          code="invalid_admin_token",
                          headers={"WWW-Authenticate": 'Bearer realm="llama-router admin"'})


async def _within_limits(request: web.Request, handler: Handler, index: int, key: ApiKey) -> web.StreamResponse:
    """Serve the request under the key's rate and concurrency limits."""
    request[API_KEY] = key
    limits = request.app[KEY_LIMITS]
    holds = not request.path.startswith(EVENT_STREAMS)
    refusal = limits.enter(key, time.monotonic(), holds=holds)
    if refusal is not None:
        return _refuse(request, index, refusal)
    try:
        return await handler(request)
    finally:
        if holds:
            limits.leave(key)


def _refuse(request: web.Request, index: int, refusal: Refusal) -> web.Response:
    log.info("refused %s %s from %s with api_keys[%d]: %s", request.method, request.path, request.remote, index,
             refusal.code)
    headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after is not None else None
    return error_response(refusal.status, refusal.message, code=refusal.code, headers=headers)


def is_public_page(request: web.Request) -> bool:
    """The WebUI's files and the dashboard page load without a key (both then ask
    the user for one); every API call they make still needs it."""
    return request.method in ("GET", "HEAD") and request.match_info.handler in request.app[PUBLIC_PAGES]


def exposure_warning(host: str, api_keys: tuple[str | ApiKey, ...], tls: bool = False) -> str | None:
    """The start-up warning for an API open to the network to anyone."""
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        return None
    if api_keys:
        return None
    over = "" if tls else " over plain HTTP"
    return (f"listening on {host}{over} without router.api_keys: anyone who can reach this address can use "
            "every model; set api_keys or bind 127.0.0.1")
