"""Every typed key of the aiohttp application that the shared HTTP layer knows
(the route modules of router/api/ keep their own next to them: api/metrics.py's METRICS).

Routes reach the router's state only through these: the model manager, the
reloader, the shutdown signal (ends long-lived event streams), the map of
WebUI conversations, and the handlers that serve pages without an API key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from router.catalogue.config import ApiKey, RouterSettings
from router.core.downloads import Downloads
from router.core.manager import ModelManager
from router.core.reload import Reloader
from router.http.api_keys import KeyLimits
from router.http.conversations import ConversationMap
from router.upstream.pool import UpstreamPool

MANAGER = web.AppKey("manager", ModelManager)
RELOADER = web.AppKey("reloader", Reloader)
SHUTDOWN = web.AppKey("shutdown", asyncio.Event)
CONVERSATIONS = web.AppKey("conversations", ConversationMap)
# Downloads into the HF cache in progress (POST /models, POST /admin/download).
DOWNLOADS = web.AppKey("downloads", Downloads)
# The client of every request relayed to a child (router/upstream/pool.py).
UPSTREAM = web.AppKey("upstream", UpstreamPool)
# Facts about the llama-server build children run: {"build_info": "b<build>-<commit>"} once known.
BUILD = web.AppKey("build", dict)
# The router settings in force now (keys, admin token): read on every request, so a reload applies at
# once; the single-host app reads its manager's catalogue, the cluster front its own (router/http/access.py).
ROUTER_SETTINGS: web.AppKey[Callable[[], RouterSettings]] = web.AppKey("router_settings")
# Each API key's rate and requests in flight (router/http/access.py).
KEY_LIMITS = web.AppKey("key_limits", KeyLimits)
# The API key a request came with, when router.api_keys is set (router/http/access.py).
API_KEY = web.RequestKey("api_key", ApiKey)
# The id of the request being served (router/http/request_id.py).
REQUEST_ID = web.RequestKey("request_id", str)


T = TypeVar("T")


def state(request: web.Request, key: web.AppKey[T]) -> T:
    """The application state under `key`: the request's own application's, else the main
    one's (an /admin request's application is the sub-application). `request.config_dict`
    alone builds a chain of the applications on every call: too slow for the request path."""
    value = request.app.get(key)  # not `key in app`: that costs a KeyError when absent
    return request.config_dict[key] if value is None else value


def state_or_none(request: web.Request, key: web.AppKey[T]) -> T | None:
    value = request.app.get(key)
    return request.config_dict.get(key) if value is None else value
