"""A request's place in the queue: its priority, its tenant and its deadline
(docs/scheduling.md).

- Priority: the API key's `priority` (`normal` without a key). A request may
  lower it, never raise it, with `X-Priority: low` (a class or a whole number);
  a higher value than the key's is taken as the key's.
- Tenant: the API key's identity, a digest of its secret (never the secret);
  requests without a key are one tenant.
- Deadline: the key's `max_wait` (seconds; none: no limit). A request may ask
  for a shorter one with `X-Max-Wait: 30` (seconds); a longer one is taken as
  the key's.

A bad header is a 400 in the API's shape.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from aiohttp import web

from router.catalogue.config import ApiKey
from router.core.queue_order import DEFAULT_PRIORITY, PRIORITY_CLASSES, priority_value
from router.http.app_keys import API_KEY
from router.http.errors import HTTPError

PRIORITY_HEADER = "X-Priority"
MAX_WAIT_HEADER = "X-Max-Wait"


@dataclass(frozen=True, slots=True)
class QueueTerms:
    priority: int = DEFAULT_PRIORITY
    tenant: str | None = None
    max_wait: float | None = None  # seconds from the request's arrival; None: no limit

    def deadline(self, now: float) -> float | None:
        return None if self.max_wait is None else now + self.max_wait


def parse_priority(text: str) -> int:
    """An X-Priority value: a class or a whole number; ValueError otherwise."""
    if not text.strip():
        raise ValueError("empty")
    return priority_value(text)


def parse_max_wait(text: str) -> float:
    """An X-Max-Wait value: seconds, a number >= 0 (fractions allowed); ValueError otherwise."""
    seconds = float(text.strip())
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(text)
    return seconds


def tenant_of(key: ApiKey | None) -> str | None:
    """The key's identity in the queue: a digest of its secret; None for requests without a key."""
    if key is None:
        return None
    return "key:" + hashlib.sha256(key.key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def key_terms(key: ApiKey | None) -> QueueTerms:
    if key is None:
        return QueueTerms()
    return QueueTerms(priority_value(key.priority), tenant_of(key), key.max_wait)


def queue_terms(request: web.Request) -> QueueTerms:
    """The request's terms: its key's, lowered or shortened by its headers (read once per request)."""
    known = request.get(TERMS)
    if known is None:
        known = request[TERMS] = _read_terms(request)
    return known


def _read_terms(request: web.Request) -> QueueTerms:
    terms = key_terms(request.get(API_KEY))
    priority, max_wait = terms.priority, terms.max_wait
    raw = request.headers.get(PRIORITY_HEADER)
    if raw is not None:
        try:
            priority = min(priority, parse_priority(raw))
        except ValueError:
            raise HTTPError(400, f"{PRIORITY_HEADER} must be one of {', '.join(PRIORITY_CLASSES)} or a whole "
                            "number (it may lower the API key's priority, never raise it)",
                            code="invalid_priority") from None
    raw = request.headers.get(MAX_WAIT_HEADER)
    if raw is not None:
        try:
            asked = parse_max_wait(raw)
        except ValueError:
            raise HTTPError(400, f"{MAX_WAIT_HEADER} must be seconds to wait at most for the model, a number "
                            ">= 0 (e.g. 30)", code="invalid_max_wait") from None
        max_wait = asked if max_wait is None else min(max_wait, asked)
    return QueueTerms(priority, terms.tenant, max_wait)


TERMS = web.RequestKey("queue_terms", QueueTerms)
