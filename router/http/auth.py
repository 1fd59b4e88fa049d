"""Who may talk to the router: API keys for the public API, a token for /admin.

Secrets are compared in constant time (hmac.compare_digest on bytes, every
key checked) and are never logged: a failed attempt logs the client address
and the path, not what it sent. The settings are read from the current
catalogue on every request, so a reload that rotates a key applies at once.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from router.http.errors import error_response
from router.http.keys import MANAGER, PUBLIC_PAGES

log = logging.getLogger("router.auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/health", "/v1/health"})
ADMIN_PREFIX = "/admin"


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


def is_admin_path(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


@web.middleware
async def require_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[MANAGER].config.router
    if is_admin_path(request.path):
        if not settings.admin_token:
            return error_response(403, "admin disabled: set router.admin_token or --admin-token",
                                  code="admin_disabled")
        token = _bearer(request) or request.headers.get("X-Admin-Token")
        if not matches(token, (settings.admin_token,)):
            log.warning("rejected admin request from %s to %s: %s token", request.remote, request.path,
                        "wrong" if token else "no")
            return error_response(401, "admin token missing or wrong: send Authorization: Bearer <token> "
                                  "or X-Admin-Token", code="invalid_admin_token",
                                  headers={"WWW-Authenticate": 'Bearer realm="llama-router admin"'})
        return await handler(request)
    if settings.api_keys and request.path not in OPEN_PATHS and not is_public_page(request):
        key = _bearer(request) or request.headers.get("x-api-key")
        if not matches(key, settings.api_keys):
            log.warning("rejected request from %s to %s: %s API key", request.remote, request.path,
                        "wrong" if key else "no")
            return error_response(401, "API key missing or wrong: send Authorization: Bearer <key> or "
                                  "x-api-key", code="invalid_api_key",
                                  headers={"WWW-Authenticate": 'Bearer realm="llama-router"'})
    return await handler(request)


def is_public_page(request: web.Request) -> bool:
    """The WebUI's files and the dashboard page load without a key (both then ask
    the user for one); every API call they make still needs it."""
    return request.method in ("GET", "HEAD") and request.match_info.handler in request.app[PUBLIC_PAGES]


def exposure_warning(host: str, api_keys: tuple[str, ...]) -> str | None:
    """The start-up warning for an API open to the network."""
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        return None
    if api_keys:
        return None
    return (f"listening on {host} without router.api_keys: anyone who can reach this address can use "
            "every model; set api_keys or bind 127.0.0.1")
