"""Reading what a request asks for: its body, strictly parsed, and its model.

Strict JSON means: UTF-8 only (what the children expect), no NaN/Infinity
(not JSON, and llama-server rejects them with a less helpful error), a
bounded nesting depth, and an object at the top. Every malformed body is a
clear 400; a model name is checked before it is looked up, and never
reaches the filesystem.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from router.catalogue.config import NAME_RE, NAME_RULE, ApiKey, Config, ModelSpec, RouterSettings, SelectorSpec
from router.core.manager import ModelManager
from router.core.profiles import HoldsProfile, pin, pin_upstream
from router.core.scheduler import State
from router.core.selector import order
from router.http.api_keys import may_use, may_use_selector
from router.http.app_keys import MANAGER, state
from router.http.errors import HTTPError, short
from router.http.launch_args import refuse_launch_keys
from router.http.multipart import MultipartError, form_field


async def read_body(request: web.Request, settings: RouterSettings | None = None) -> bytes:
    """The body, within router.body_timeout and router.max_body_bytes. `settings`: the
    router's (default: the model manager's catalogue; the cluster front passes its own)."""
    settings = settings or state(request, MANAGER).config.router
    patience = settings.body_timeout
    try:
        async with asyncio.timeout(patience or None):
            return await request.read()
    except TimeoutError:
        raise HTTPError(408, f"request body not received within {patience:g} s (router.body_timeout)",
                        code="request_timeout") from None
    except web.HTTPRequestEntityTooLarge:
        # The limit the server enforces (fixed at start), not a value reloaded since.
        limit = getattr(request, "_client_max_size", None) or settings.max_body_bytes
        raise HTTPError(413, f"request body too large (limit {limit} bytes, router.max_body_bytes)",
                        code="body_too_large") from None
    except RequestPayloadError as e:  # e.g. Content-Encoding: gzip on a body that is not gzip
        raise HTTPError(400, f"request body cannot be read: {e.__cause__ or e}", code="invalid_body") from None


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise HTTPError(400, "request body is empty; expected a JSON object", code="invalid_json")
    try:
        text = body.decode("utf-8")  # JSON on the wire is UTF-8 (RFC 8259); the children expect nothing else
    except UnicodeDecodeError as e:
        raise HTTPError(400, f"request body is not UTF-8 text (byte {e.start})", code="invalid_encoding") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except ValueError as e:
        raise HTTPError(400, f"request body is not valid JSON: {e}", code="invalid_json") from None
    except RecursionError:
        raise HTTPError(400, "request body is nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise HTTPError(400, "request body must be a JSON object", code="invalid_json")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def read_request(request: web.Request, body: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """The model a request names, and its JSON body when it has one: ?model= for
    GET, the form field of a multipart body, else the JSON body's "model" (which
    may not carry launch settings)."""
    if request.method in ("GET", "HEAD", "DELETE"):
        return request.query.get("model"), None
    if request.content_type.startswith("multipart/"):
        try:
            name = await form_field(request.headers.get("Content-Type", ""), body, "model")
        except MultipartError as e:
            raise HTTPError(400, f"malformed multipart body: {e}", code="invalid_multipart") from None
        return name or request.query.get("model"), None
    if not body.strip() and "model" in request.query:
        return request.query["model"], None
    data = parse_json_object(body)
    refuse_launch_keys(data)
    if request.path in MESSAGE_LISTS and not isinstance(data.get("messages"), list):
        # llama-server answers a missing list with a 500 on /v1/messages: the client's mistake is a 400.
        raise HTTPError(400, "'messages' is required: a list of messages", code="invalid_messages")
    return data.get("model") or request.query.get("model"), data


MESSAGE_LISTS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})


_DURATION_RE = re.compile(r"^(-)?((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)$")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def keep_alive_seconds(value: Any) -> float:
    """Ollama's keep_alive: seconds as a number, or a duration ("10m", "1h30m",
    "-1"); 0 unloads after the reply, a negative value keeps the model loaded.
    ValueError for anything else, infinities and NaN included."""
    try:
        seconds = _seconds(value)
    except OverflowError:  # an integer too large for a float
        raise ValueError from None
    if not math.isfinite(seconds):
        raise ValueError
    return seconds


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        m = _DURATION_RE.match(text)
        if m:
            total = sum(float(n) * _UNIT_S[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", m.group(2)))
            return -total if m.group(1) else total
    raise ValueError


def take_keep_alive(data: dict[str, Any]) -> float | None:
    """Remove `keep_alive` from a request body (the child never sees it); its seconds."""
    if "keep_alive" not in data:
        return None
    raw = data.pop("keep_alive")
    try:
        return keep_alive_seconds(raw)
    except ValueError:
        raise HTTPError(400, "'keep_alive' must be seconds or a duration such as \"10m\", 0 (unload after this "
                        "reply) or -1 (keep loaded)", code="invalid_keep_alive") from None


# Every key by which a request caps its reply (llama-server reads any of them; -1, its "no
# limit", is a cap the request chose), and the one each generation endpoint reads natively.
REPLY_CAP_KEYS = ("max_tokens", "max_completion_tokens", "n_predict", "max_output_tokens")
_CAP_KEY_OF = {
    "/completion": "n_predict", "/completions": "n_predict", "/infill": "n_predict",
    "/v1/completions": "max_tokens", "/chat/completions": "max_tokens", "/v1/chat/completions": "max_tokens",
    "/v1/messages": "max_tokens", "/v1/responses": "max_output_tokens", "/responses": "max_output_tokens",
}


def default_reply_cap(path: str, data: dict[str, Any], cap: int) -> bool:
    """Give a generation request that caps its reply by none of REPLY_CAP_KEYS (a null
    one is none) `cap` tokens, under the key `path` reads; True when `data` changed.

    Without it llama-server generates until the model stops or the slot's context is
    full: a chat UI's background tasks (Open WebUI's tags and follow-ups) on a model
    that rambles hold a slot for a minute. `-n` on the child would cap every request;
    this leaves a request that asks for more alone."""
    key = _CAP_KEY_OF.get(path)
    if cap <= 0 or key is None or any(data.get(k) is not None for k in REPLY_CAP_KEYS):
        return False
    for k in REPLY_CAP_KEYS:
        data.pop(k, None)
    data[key] = cap
    return True


def pinned(manager: HoldsProfile, name: Any) -> Any:
    """The model a request for `name` goes to under the active profile (core/profiles.py): the
    pin's target, else `name` as it came; a 404 for an id the profile turns off. Pins come first:
    before aliases, selectors and fallbacks (llama-swap's order). Routes that serve a request
    call it (inference, Ollama's generation, /upstream); those that manage a model do not.
    `manager`: one host's ModelManager, or the cluster front's ClusterManager."""
    profile = manager.profile.spec
    if profile is None or not isinstance(name, str):
        return name
    target = pin(profile, name)
    if target is None:
        raise _turned_off(name, profile.name)
    return target


def _turned_off(name: str, profile: str) -> HTTPError:
    return HTTPError(404, f"model '{short(name)}' not found (profile '{profile}' turns it off)",
                     "invalid_request_error", "model_not_found")


def pinned_request(manager: HoldsProfile, name: Any, data: dict[str, Any] | None) -> tuple[Any, bool]:
    """`pinned`, and the JSON body's `model` set to the target (as llama-swap rewrites it);
    True when the body changed."""
    target = pinned(manager, name)
    if target == name or data is None or data.get("model") != name:
        return target, False
    data["model"] = target
    return target, True


def pinned_upstream(manager: HoldsProfile, name: str, path: str) -> tuple[str, str]:
    """/upstream/<name><path> under the active profile: the model and the path the request goes
    to. A pin may hold '/' (the longest that starts the whole path wins, as llama-swap's)."""
    profile = manager.profile.spec
    if profile is None:
        return name, path
    whole = name + path
    found = pin_upstream(profile.pins, whole)
    if found is None:
        return name, path
    if found[1] is None:
        raise _turned_off(found[0], profile.name)
    return found[1], whole[len(found[0]):] or "/"


def resolve_model(manager: ModelManager, name: Any, key: ApiKey | None = None) -> ModelSpec:
    """The catalogue entry a request names (by name or alias), or a 400/404; a model
    the request's API key may not use is a 404 exactly like one that does not exist.
    router.active_model names whichever model is loaded (docs/conversations.md). A selector
    is the target its strategy would try first (ModelManager.acquire chooses again, and tries
    the others when that one cannot serve)."""
    config = manager.config
    active = config.router.active_model
    if active is not None and name == active and config.resolve(active) is None:
        name = _loaded_model(manager, key) or name
    selector = config.selectors.get(name) if isinstance(name, str) else None
    if selector is not None:
        return _selector_target(config, selector, key, {t: manager.state(t) for t in selector.targets})
    return resolve_name(config, name, key)


def _selector_target(config: Config, selector: SelectorSpec, key: ApiKey | None,
                     states: Mapping[str, State]) -> ModelSpec:
    """The first target in the strategy's order that `key` may use; a 404 when the key may
    not use the selector's id, or none of its targets (docs/scheduling.md#selectors)."""
    if may_use_selector(key, selector.id):
        for target in order(selector, states):
            spec = config.models.get(target)
            if spec is not None and may_use(key, spec):
                return spec
    raise HTTPError(404, f"model '{short(selector.id)}' not found", "invalid_request_error", "model_not_found")


def _loaded_model(manager: ModelManager, key: ApiKey | None) -> str | None:
    """The model router.active_model stands for: the loaded model started last that `key` may use,
    else the one started last, else none (the name then is not found)."""
    usable = [n for n, spec in manager.config.models.items() if may_use(key, spec)]
    ready = [n for n in usable if manager.state(n) is State.READY]
    last = manager.last_spawned
    if last in ready or (not ready and last in usable):
        return last
    return ready[0] if ready else None


def resolve_name(config: Config, name: Any, key: ApiKey | None = None,
                 states: Mapping[str, State] | None = None) -> ModelSpec:
    """`resolve_model` in a catalogue (the cluster front has no manager of its own): a selector
    is the target its strategy would try first by `states` (the models' across the hosts;
    ClusterManager.acquire chooses again, and tries the others when that one cannot serve)."""
    if name is None or name == "":
        raise HTTPError(400, "missing 'model': name the model to use", code="model_required")
    if not isinstance(name, str):
        raise HTTPError(400, "'model' must be a string", code="invalid_model")
    if not NAME_RE.match(name):
        # Never echoed, never looked up on disk: '..', '//', NUL and control characters stop here.
        raise HTTPError(400, f"invalid model name: use {NAME_RULE}", code="invalid_model")
    selector = config.selectors.get(name)
    if selector is not None:
        return _selector_target(config, selector, key, states or {})
    spec = config.resolve(name)
    if spec is None or not may_use(key, spec):
        raise HTTPError(404, f"model '{short(name)}' not found", "invalid_request_error", "model_not_found")
    return spec


def servable_model(manager: ModelManager, name: Any, key: ApiKey | None = None) -> ModelSpec:
    """`resolve_model`, and a 404 naming the file when the model's file is gone.

    The catalogue marks such models at each rescan; a model that is not
    running is also checked now, so a file deleted since is never handed to
    llama-server (a running child keeps its open file and goes on serving). A model
    with `fallbacks`, or named through a selector, is left to them (ModelManager.acquire)."""
    spec = resolve_model(manager, name, key)
    if spec.fallbacks or name in manager.config.selectors:
        return spec
    gone = spec.name in manager.config.missing or (
        spec.model_file is not None and manager.state(spec.name) is State.STOPPED
        and not os.path.exists(spec.model_file))
    if gone:
        raise HTTPError(404, f"model '{spec.name}' is missing: its file {spec.path} was moved or deleted; "
                        "it is served again once the file is back", "invalid_request_error", "model_missing")
    return spec
