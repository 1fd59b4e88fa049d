"""Who may call each route: the declaration on its handler, and the middlewares
that enforce it.

Every route handler says where it is defined who may call it and what it does
with the models (docs/api.md, "API keys and roles"):

    @declare(READ, Models.FILTERED)    # a model list: the handler filters its reply with may_see
    @declare(INFERENCE, Models.NAMED)  # the model it names must pass may_use (404 otherwise,
                                       #   where the request is parsed: http/request.py)
    @declare(READ, Models.EVERY)       # names every model: 403 model_scope to a key limited to some
    @declare(PUBLIC, Models.NONE)      # no key needed (health, the WebUI's files)

A request whose needs depend on its query is refined by `when`: GET /models
is READ and FILTERED, GET /models?reload=1 re-reads the catalogue:
`declare(READ, Models.FILTERED, when={"reload": (INFERENCE, Models.EVERY)})`.
A request whose needs depend on its method is served by one handler per
need (the WebUI's files are public to GET and HEAD only). An event stream,
open as long as its page, holds none of its key's concurrency: `holds=False`.
A static route is declared on its resource: `declare(...)(router.add_static(...))`.

Deny by default: `deny_undeclared(app)` makes the start-up fail when a route
has no declaration (aiohttp's HEAD routes share their GET's handler, so its
declaration). /admin is a sub-application (`admin_app()`) with its own
middleware, `require_admin`: the admin token, or an API key with the admin
role; every other route goes through `require_auth`.

Secrets are compared in constant time (hmac.compare_digest on bytes, every
key checked) and are never logged: a failed attempt logs the client address
and the path, not what it sent; a refused key is named by its place in
router.api_keys (`api_keys[2]`). The settings are read from the current
catalogue on every request, so a reload that rotates a key applies at once.
What a key may do is decided in http/api_keys.py; the key a request came with
is kept on it (API_KEY), so the routes that name a model answer 404 for a
model the key may not use.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from aiohttp import web

from router.catalogue.config import ROLES, ApiKey
from router.http.api_keys import Refusal, find_key, route_refusal
from router.http.app_keys import API_KEY, KEY_LIMITS, ROUTER_SETTINGS, state
from router.http.errors import error_response, unrouted

log = logging.getLogger("router.auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC = "public"  # no key needed; then READ < INFERENCE < ADMIN, the roles of an API key
READ, INFERENCE, ADMIN = ROLES


class Models(Enum):
    """What a route does with the models, which decides what a key limited to some may do."""

    NONE = "none"  # names no model
    NAMED = "named"  # names one: may_use where the model is resolved, 404 model_not_found otherwise
    FILTERED = "filtered"  # lists models: the handler filters its reply with may_see
    EVERY = "every"  # a view of every model, or a change to the catalogue: 403 model_scope to a limited key


@dataclass(frozen=True)
class Access:
    """A route's declaration: the least role that may call it, what it does with the
    models, whether a request holds one of its key's concurrency slots, and its
    refinements by query parameter."""

    role: str
    models: Models
    holds: bool = True
    when: tuple[tuple[str, Access], ...] = ()

    def for_query(self, query: Mapping[str, str]) -> Access:
        """The first refinement whose parameter the request sets (non-empty), else this one."""
        for name, access in self.when:
            if query.get(name):
                return access
        return self


T = TypeVar("T")
_ACCESS = "__router_access__"
# A request no route took (404 or 405): an API call like any other.
UNROUTED = Access(INFERENCE, Models.NONE)


def declare(role: str, models: Models, *, holds: bool = True,
            when: Mapping[str, tuple[str, Models]] | None = None) -> Callable[[T], T]:
    """Declare who may call the routes a handler serves (see the module's docstring)."""
    if role != PUBLIC and role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    refined = tuple((name, Access(r, m, holds)) for name, (r, m) in (when or {}).items())
    access = Access(role, models, holds, refined)

    def mark(handler: T) -> T:
        if _ACCESS in vars(handler):  # one handler, two declarations: give each its own handler
            raise ValueError(f"{handler!r} is declared already")
        setattr(handler, _ACCESS, access)
        return handler
    return mark


def declared(route: web.AbstractRoute) -> Access | None:
    """A route's declaration: its handler's (a method reads its function's), or its resource's."""
    for owner in (route.handler, route.resource):
        access = getattr(owner, _ACCESS, None)
        if isinstance(access, Access):
            return access
    return None


def access_of(request: web.Request) -> Access:
    """The declaration that applies to this request, refined by its query."""
    return access_for(request.match_info, request.query)


def access_for(info: web.UrlMappingMatchInfo, query: Mapping[str, str]) -> Access:
    """The declaration of the route the router resolved (`info`), refined by `query`."""
    access = declared(info.route)
    if access is None:  # no route took it: inside /admin, as admin as the rest of /admin
        access = Access(ADMIN, Models.NONE) if info.apps and _is_admin_app(info.apps[-1]) else UNROUTED
    return access.for_query(query)


def is_public(request: web.Request) -> bool:
    return access_of(request).role == PUBLIC


@web.middleware
async def require_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The API key a route's declaration asks for (every route but /admin's)."""
    access = access_of(request)
    if access.role == ADMIN:  # in the /admin sub-application: its middleware decides
        return await handler(request)
    settings = state(request, ROUTER_SETTINGS)()
    if not settings.api_keys or access.role == PUBLIC:
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
    view = request.method in ("GET", "HEAD") and not request.query.get("reload")
    refusal = route_refusal(key, access.role, access.models is Models.EVERY, view)
    if refusal is not None:
        return _refuse(request, index, refusal)
    return await _within_limits(request, handler, index, key, access.holds)


@web.middleware
async def require_admin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """/admin: the admin token, or an API key with the admin role (which sees every model:
    the catalogue refuses `models` on it)."""
    if request.match_info.http_exception is not None:  # behind the same check as the routes
        handler = _no_admin_route
    settings = state(request, ROUTER_SETTINGS)()
    admin_keys = any(isinstance(k, ApiKey) and k.role == ADMIN for k in settings.api_keys)
    if not settings.admin_token and not admin_keys:
        return error_response(403, "admin disabled: set router.admin_token or --admin-token (or give an API key "
                              "role: admin)", code="admin_disabled")
    token = _bearer(request) or request.headers.get("X-Admin-Token") or request.headers.get("x-api-key")
    if settings.admin_token and matches(token, (settings.admin_token,)):
        return await handler(request)
    found = find_key(token, settings.api_keys) if admin_keys else None
    if found is not None and found[1].role == ADMIN:
        return await _within_limits(request, handler, *found, access_of(request).holds)
    log.warning("rejected admin request from %s to %s: %s token", request.remote, request.path,
                "wrong" if token else "no")
    return error_response(401, "admin token missing or wrong: send Authorization: Bearer <token> "
                          f"or X-Admin-Token{' (or an API key with the admin role)' if admin_keys else ''}",
                          code="invalid_admin_token",
                          headers={"WWW-Authenticate": 'Bearer realm="llama-router admin"'})


async def _no_admin_route(request: web.Request) -> web.Response:
    """A path under /admin that no admin route takes: 404, or 405 with the methods it has."""
    missing = request.match_info.http_exception
    return unrouted(request, set(missing.allowed_methods) if isinstance(missing, web.HTTPMethodNotAllowed) else set())


def admin_app() -> web.Application:
    """The /admin sub-application (mount it with `app.add_subapp("/admin", ...)`), with its
    own middleware. Its handlers read the application's state with `request.config_dict`,
    which sees the parent's."""
    return web.Application(middlewares=[require_admin])


def _is_admin_app(app: web.Application) -> bool:
    return require_admin in app.middlewares


def check_routes(app: web.Application) -> list[str]:
    """What is wrong with the declarations of `app`'s routes and its sub-applications':
    a route without one, an admin route outside an /admin sub-application, or one in it
    that is not declared ADMIN; and an application without `require_auth`."""
    wrong = [] if require_auth in app.middlewares else ["the application has no require_auth middleware"]
    return wrong + _check(app)


def _check(app: web.Application) -> list[str]:
    wrong = []
    admin = _is_admin_app(app)
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            wrong += _check(resource.get_info()["app"])
            continue
        for route in resource:
            access = declared(route)
            where = f"{route.method} {resource.canonical} ({getattr(route.handler, '__qualname__', route.handler)})"
            if access is None:
                wrong.append(f"{where} has no access declaration (router.http.access.declare)")
            elif admin != (access.role == ADMIN):
                wrong.append(f"{where} is declared {access.role} " +
                             ("inside /admin" if admin else "outside the /admin sub-application"))
    return wrong


def deny_undeclared(app: web.Application) -> None:
    """Make `app`'s start-up fail, before anything else starts, when check_routes finds
    something wrong: a route nobody declared is closed, never open."""
    async def check(app: web.Application) -> None:
        wrong = check_routes(app)
        if wrong:
            raise RuntimeError("routes without a valid access declaration: " + "; ".join(wrong))
    app.on_startup.insert(0, check)


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


async def _within_limits(request: web.Request, handler: Handler, index: int, key: ApiKey,
                         holds: bool) -> web.StreamResponse:
    """Serve the request under the key's rate and concurrency limits; one that does not
    `hold` (an event stream) counts against the rate only."""
    request[API_KEY] = key
    limits = state(request, KEY_LIMITS)
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


def exposure_warning(host: str, api_keys: tuple[str | ApiKey, ...], tls: bool = False) -> str | None:
    """The start-up warning for an API open to the network to anyone."""
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        return None
    if api_keys:
        return None
    over = "" if tls else " over plain HTTP"
    return (f"listening on {host}{over} without router.api_keys: anyone who can reach this address can use "
            "every model; set api_keys or bind 127.0.0.1")
