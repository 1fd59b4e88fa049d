"""Requests never choose a child's command line, unless the catalogue says so.

A load request (POST /models/load, /admin/models/{name}/load) may carry
`"args": ["--temp", "0.5"]`, but only flags the model's `allow_args` lists
are accepted, values may not look like flags or hold control characters,
and the flags the router sets itself (--model, --port...) can never be
whitelisted (see config.RESERVED_FLAGS). Inference requests that try to
pass launch settings are refused outright: a child is not restarted per
request.
"""

from __future__ import annotations

import re
from typing import Any

from router.catalogue.config import RESERVED_FLAGS, ModelSpec
from router.http.errors import HTTPError

ARG_KEYS = ("args", "extra_args")
# Body keys that only make sense as launch settings; never forwarded.
LAUNCH_KEYS = frozenset({"args", "extra_args", "command", "cmd", "spawn", "env", "model_path", "mmproj"})
MAX_ARGS = 32
MAX_VALUE_LEN = 256
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _bad(message: str) -> HTTPError:
    return HTTPError(400, message, code="args_not_allowed")


def check_args(spec: ModelSpec, args: Any) -> tuple[str, ...]:
    """Validate extra child args against the model's whitelist."""
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise _bad("'args' must be a list of strings, e.g. [\"--temp\", \"0.5\"]")
    if len(args) > MAX_ARGS:
        raise _bad(f"too many 'args' (at most {MAX_ARGS})")
    if args and not args[0].startswith("-"):
        raise _bad(f"'args' must start with a flag, got {args[0][:40]!r}")
    for a in args:
        if not a or len(a) > MAX_VALUE_LEN or any(ord(c) < 32 or ord(c) == 127 for c in a):
            raise _bad("every arg must be 1-256 printable characters")
        if a.startswith("-") and not _is_number(a):
            flag = a.split("=", 1)[0]
            if flag in RESERVED_FLAGS or flag not in spec.allow_args:
                allowed = ", ".join(spec.allow_args) or "none"
                raise _bad(f"arg {flag[:40]!r} is not allowed for model '{spec.name}' "
                           f"(the catalogue's allow_args lists: {allowed})")
    return tuple(args)


def _is_number(s: str) -> bool:
    """A negative value such as -1 or -0.5. Only plain ASCII decimals: float() also takes
    "-inf", "-nan", "-1_000" and "-1e5", which launch.build_launch reads as flags."""
    return _NUMBER.fullmatch(s) is not None


def load_overrides(spec: ModelSpec, data: dict[str, Any]) -> tuple[str, ...]:
    """The whitelisted extra args of a load request's JSON body (may be empty)."""
    present = [k for k in ARG_KEYS if k in data]
    if len(present) > 1:
        raise _bad("send 'args' only once")
    unknown = sorted(k for k in data if k in LAUNCH_KEYS and k not in ARG_KEYS)
    if unknown:
        raise _bad(f"'{unknown[0]}' cannot be set by a request; it comes from the catalogue")
    return check_args(spec, data[present[0]]) if present else ()


def refuse_launch_keys(data: dict[str, Any]) -> None:
    """Inference bodies may not smuggle launch settings."""
    found = sorted(k for k in data if k in LAUNCH_KEYS)
    if found:
        raise _bad(f"'{found[0]}' cannot be set per request: a model's command line comes from the "
                   "catalogue (use POST /models/load with whitelisted args)")
