"""The one way the router answers with an error: OpenAI's JSON shape."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from router.core.refusal import Refused

log = logging.getLogger("router.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "unavailable_error",
}


# The status each kind of refusal from a service below the routes stands for (router/core/refusal.py).
REFUSAL_STATUS = {"invalid": 400, "forbidden": 403, "conflict": 409, "failed": 500}


def error_body(status: int, message: str, type_: str | None = None, code: str | int | None = None) -> dict:
    return {"error": {"message": message, "type": type_ or _TYPES.get(status, "server_error"),
                      "code": code if code is not None else status}}


def error_response(status: int, message: str, type_: str | None = None,
                   code: str | int | None = None, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(status, message, type_, code), status=status, headers=headers)


def short(text: str) -> str:
    """A name or path as it may be echoed in an error message."""
    return text if len(text) <= 120 else text[:120] + "..."


async def no_route(request: web.Request) -> web.Response:
    """What a catch-all answers for a path no other route took: 404, or 405 naming the
    methods the path has, as it would be without the catch-all."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is request.match_info.route.resource:
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    return unrouted(request, allowed)


def unrouted(request: web.Request, allowed: set[str]) -> web.Response:
    """A request no route took: 405 when the path has `allowed` methods, else 404."""
    shown = short(request.path)
    if allowed:
        return error_response(405, f"{request.method} is not allowed on {shown}", code="method_not_allowed",
                              headers={"Allow": ", ".join(sorted(allowed))})
    return error_response(404, f"no route for {request.method} {shown}", code="not_found")


class HTTPError(Exception):
    """Raised inside handlers; turned into an error response by the middleware."""

    def __init__(self, status: int, message: str, type_: str | None = None, code: str | int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.headers = headers

    def response(self) -> web.Response:
        return error_response(self.status, self.message, self.type, self.code, self.headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes an OpenAI-style JSON error; none escapes as a crash."""
    try:
        return await handler(request)
    except HTTPError as e:
        return e.response()
    except Refused as e:
        return error_response(REFUSAL_STATUS[e.why], e.message, code=e.code)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return error_response(e.status, e.reason or "error", headers={
            k: v for k, v in e.headers.items() if k.lower() == "allow"})
    except (ConnectionError, aiohttp.ClientConnectionError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal router error (see the router log)")
