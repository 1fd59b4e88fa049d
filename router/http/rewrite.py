"""A model's request rewriting: what its server receives in place of the client's JSON body.

llama-swap's filters, in its order: `use_model_name` (the `model` value the
server receives), `strip_params` (keys removed), `set_params` (keys set over
the client's; `k?` only where the request has no `k`), then the parameters
of the virtual id the client asked for (`set_params_by_id`, applied last so
they win). Only top-level keys: a value that is a mapping replaces the
client's whole value, as llama-swap's does.

A model without rules costs one test of four empty fields: the route keeps
the client's bytes and sends them as they came (no re-serialisation).
"""

from __future__ import annotations

from typing import Any

from router.catalogue.config import ModelSpec

DEFAULT_MARK = "?"  # `top_k?: 40`: set top_k only when the request has none


def has_rules(spec: ModelSpec) -> bool:
    return bool(spec.use_model_name or spec.strip_params or spec.set_params or spec.set_params_by_id)


def rewrite_body(data: dict[str, Any], spec: ModelSpec, requested: str) -> bool:
    """Apply `spec`'s rules to a request body for the name the client sent (a name, an
    alias or a virtual id), in place; True when it had rules (the body is written anew)."""
    if not has_rules(spec):
        return False
    if spec.use_model_name:
        data["model"] = spec.use_model_name
    apply_params(data, spec.strip_params, spec.set_params)
    set_params(data, spec.set_params_by_id.get(requested) or {})
    return True


def apply_params(data: dict[str, Any], strip: tuple[str, ...] | list[str], params: dict[str, Any]) -> None:
    """Remove `strip`, then set `params` (`k?`: a default), in place (a model's or a peer's)."""
    for param in strip:
        data.pop(param, None)
    set_params(data, params)


def set_params(data: dict[str, Any], params: dict[str, Any]) -> None:
    for key, value in params.items():
        if key.endswith(DEFAULT_MARK):
            key = key[:-1]
            if data.get(key) is not None:  # a null one is none, as for the reply cap
                continue
        data[key] = value
