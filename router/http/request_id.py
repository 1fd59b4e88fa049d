"""Every request carries an id: the client's X-Request-Id when it sends a sane
one, else a new one. It is returned in the reply, passed to the child, and
set in a context variable so every log line written while serving the
request (`--log-format json`) names it."""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from router.http.app_keys import REQUEST_ID

HEADER = "X-Request-Id"
current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_SANE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")  # never echo control characters or huge values
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def with_request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(HEADER, "")
    rid = given if _SANE.match(given) else uuid.uuid4().hex
    request[REQUEST_ID] = rid
    token = current.set(rid)
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        e.headers[HEADER] = rid
        raise
    finally:
        current.reset(token)
    if not resp.prepared:
        resp.headers[HEADER] = rid
    return resp
