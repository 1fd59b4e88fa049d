"""Fallbacks: a request its model cannot serve goes to the first of the model's
`fallbacks` that can (issue #27).

A model cannot serve a request when its file is missing, it is too big for the
memory budget, its load failed, its queue is full (max_queue) or the request's
deadline passed while it waited. Each of these is a `cause` the scheduler gives
its refusal (Reject.cause); other refusals (the router shutting down, the model
removed by a reload) never fall back. The fallbacks of a fallback follow it, in
order (the catalogue refuses cycles). A request past its deadline is served only
by a fallback that is loaded already: loading one for it would swap for a
request that has stopped waiting.

Pure: ModelManager.acquire runs the loop; these decide what it tries.
"""

from __future__ import annotations

import os

from router.catalogue.config import Config

FILE_MISSING = "file_missing"
DEADLINE = "deadline"
# The causes a fallback serves; others (shutdown, removed) are the request's answer.
FALLS_BACK = frozenset({FILE_MISSING, "too_big", "load_failed", "queue_full", DEADLINE})


def chain(config: Config, model: str) -> list[str]:
    """`model`, then its fallbacks and theirs, depth first, each once."""
    spec = config.models.get(model)
    if spec is None or not spec.fallbacks:
        return [model]  # the usual case, on every request
    out: list[str] = []

    def visit(name: str) -> None:
        if name in out or name not in config.models:
            return
        out.append(name)
        for f in config.models[name].fallbacks:
            visit(f)

    visit(model)
    return out or [model]


def file_missing(config: Config, model: str, running: bool) -> bool:
    """Whether `model`'s file is gone: marked at the last rescan, or (when it is not
    running: a running child keeps its open file) deleted since."""
    spec = config.models.get(model)
    if spec is None:
        return False
    return model in config.missing or (spec.model_file is not None and not running
                                       and not os.path.exists(spec.model_file))


def falls_back(cause: str) -> bool:
    return cause in FALLS_BACK
