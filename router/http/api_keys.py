"""What an API key may do: the role a route needs, the models it sees, and
its rate and concurrency limits (docs/api.md, "API keys and roles").

Pure decisions, no I/O and no logging: http/access.py asks and enforces, so
every rule here is tested in tests/unit/http/test_api_keys.py without a
server. The roles are ordered, read < inference < admin:

- read: the model lists, metrics and activity (the routes declared READ);
- inference: everything a plain key reaches, which is everything but /admin;
- admin: everything, /admin included (as the admin token does).

Which role a route needs, and what it does with the models, is declared on
the route itself (http/access.py `declare`). A key limited by `models` sees
only those models: a model it may not use is 404 model_not_found, exactly as
a model that does not exist, so a key cannot probe what else is served. The
routes declared to name every model at once (the router's /metrics,
/api/activity, the dashboard's data) or to change the catalogue (downloads,
deletes, reloads) are refused to such a key.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from router.catalogue.config import ROLES, ApiKey, Config, ModelSpec, SelectorSpec

READ, INFERENCE, ADMIN = ROLES
_RANK = {role: i for i, role in enumerate(ROLES)}
CONCURRENCY_RETRY_S = 1  # a request in flight ends in about a request's time


@dataclass(frozen=True)
class Refusal:
    """Why a request is turned away: an HTTP status, a message and an error code."""

    status: int
    message: str
    code: str
    retry_after: int | None = None


def as_key(entry: str | ApiKey) -> ApiKey:
    """A plain entry of router.api_keys: every model, the inference role, no limits."""
    return entry if isinstance(entry, ApiKey) else ApiKey(key=entry)


def find_key(candidate: str | None, entries: Iterable[str | ApiKey]) -> tuple[int, ApiKey] | None:
    """The entry `candidate` is (its index in router.api_keys, for logs), the first one when
    a key is listed twice. Every entry is compared, in constant time each, so the time taken
    does not tell how close a guess came, nor which entry matched."""
    if not candidate:
        return None
    given = candidate.encode("utf-8", "surrogateescape")
    found = None
    for i, entry in enumerate(entries):
        key = as_key(entry)
        if hmac.compare_digest(given, key.key.encode("utf-8")) and found is None:
            found = (i, key)
    return found


def has_role(key: ApiKey, role: str) -> bool:
    return _RANK[key.role] >= _RANK[role]


def route_refusal(key: ApiKey, role: str, every: bool, view: bool = True) -> Refusal | None:
    """None when `key` may call a route that needs `role`; `every`: the route names every
    model at once, a view of them all (`view`) or a change to the catalogue. The models
    of a route that names one are checked where the model is named (may_use)."""
    if not has_role(key, role):
        what = "the /admin API" if role == ADMIN else "inference and model management"
        return Refusal(403, f"this API key has the {key.role} role; {what} needs the {role} role",
                       "insufficient_role")
    if key.models and every:
        return Refusal(403, "this API key is limited to some models; "
                       f"{'this view shows every model' if view else 'it cannot change the catalogue'}",
                       "model_scope")
    return None


def may_use(key: ApiKey | None, spec: ModelSpec) -> bool:
    """The key's patterns match the model's name or one of its aliases (no key, or no
    patterns: every model)."""
    if key is None or not key.models:
        return True
    return any(fnmatchcase(name, pattern) for pattern in key.models for name in (spec.name, *spec.aliases))


def may_use_selector(key: ApiKey | None, selector_id: str) -> bool:
    """The key's patterns match a selector's id (no key, or no patterns: every selector). The
    target that serves must be one the key may use as well (may_use): a key reaches through a
    selector no model it could not name itself."""
    if key is None or not key.models:
        return True
    return any(fnmatchcase(selector_id, pattern) for pattern in key.models)


def listed_selectors(key: ApiKey | None, config: Config) -> list[SelectorSpec]:
    """The selectors a model list offers `key` (/v1/models, Ollama's /api/tags): listed ones
    whose id it may use, with a target it may use too."""
    return [s for s in config.selectors.values()
            if not s.unlisted and may_use_selector(key, s.id)
            and any(may_use(key, config.models[t]) for t in s.targets if t in config.models)]


def may_see(key: ApiKey | None, name: str, config: Config) -> bool:
    """An event or list entry about `name`: a catalogue model by may_use, anything else
    (a download in progress, a model just removed) by the name itself; "*" is for all."""
    if key is None or not key.models or name == "*":
        return True
    spec = config.resolve(name)
    if spec is not None:
        return may_use(key, spec)
    return any(fnmatchcase(name, pattern) for pattern in key.models)


class TokenBucket:
    """`rate.requests` requests at once, refilled evenly over `rate.per_s` seconds."""

    def __init__(self, requests: int, per_s: float, now: float):
        self.capacity, self.refill = float(requests), requests / per_s
        self.tokens, self.at = float(requests), now

    def take(self, now: float) -> float:
        """0 when a request may go now (and it is counted), else the seconds until one may."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.refill)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.refill


class KeyLimits:
    """Each key's requests in flight and token bucket, across reloads: a key keeps its
    state while its limits stay the same (state is found by a digest of the key, never the
    key itself)."""

    def __init__(self) -> None:
        self._in_flight: dict[bytes, int] = {}
        self._buckets: dict[bytes, tuple[tuple[int, float], TokenBucket]] = {}

    @staticmethod
    def _id(key: ApiKey) -> bytes:
        return hashlib.sha256(key.key.encode("utf-8")).digest()

    def enter(self, key: ApiKey, now: float, *, holds: bool = True) -> Refusal | None:
        """Count a request in, or say why not (429 with the seconds to wait). A request
        that `holds` counts as in flight until leave(); one that does not (an event
        stream, open as long as its page) counts against the rate only."""
        ident = self._id(key)
        busy = self._in_flight.get(ident, 0)
        if holds and key.concurrency and busy >= key.concurrency:
            return Refusal(429, f"too many requests in flight for this API key (its concurrency is "
                           f"{key.concurrency}); retry when one has finished", "concurrency_limit_exceeded",
                           CONCURRENCY_RETRY_S)
        if key.rate is not None:
            shape = (key.rate.requests, key.rate.per_s)
            held = self._buckets.get(ident)
            if held is None or held[0] != shape:
                held = self._buckets[ident] = (shape, TokenBucket(*shape, now))
            wait = held[1].take(now)
            if wait:
                return Refusal(429, f"rate limit of this API key reached ({key.rate}); retry in "
                               f"{math.ceil(wait)} s", "rate_limit_exceeded", max(1, math.ceil(wait)))
        if holds:
            self._in_flight[ident] = busy + 1
        return None

    def leave(self, key: ApiKey) -> None:
        ident = self._id(key)
        left = self._in_flight.get(ident, 0) - 1
        if left > 0:
            self._in_flight[ident] = left
        else:
            self._in_flight.pop(ident, None)

    def in_flight(self, key: ApiKey) -> int:
        return self._in_flight.get(self._id(key), 0)
