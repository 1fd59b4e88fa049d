"""Reading a request's JSON body strictly, so every malformed body is a clear 400.

Strict means: UTF-8 only (what the children expect), no NaN/Infinity (not
JSON, and llama-server rejects them with a less helpful error), a bounded
nesting depth, and an object at the top.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import HTTPError


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
