"""A request's queue terms on their way from the front to a host's agent
(docs/scheduling.md): its priority, its tenant and how long it may still wait.

The front reads them from the request (http/queue_terms.py) and the host's
own `ModelManager.acquire` applies them, so a host orders and expires the
front's requests exactly as it would its own. A deadline is a time on one
process's monotonic clock, and each process (the front, every agent) has its
own: it crosses Ray as the seconds left when the front sends the call, and
the agent turns it back into a time on its clock when the call arrives (the
time the call spent on its way counts as waited by no one: a fraction of a
millisecond on one network).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from router.core.queue_order import DEFAULT_PRIORITY


@dataclass(frozen=True)
class HostTerms:
    priority: int = DEFAULT_PRIORITY
    tenant: str | None = None  # the API key's identity (a digest, never the secret); None: no key
    max_wait: float | None = None  # seconds left to wait when the front sent the call; None: no limit
    # The fallbacks the request's API key may use (None: every one): a host's own fallbacks never
    # widen what the key reaches, as on one host (docs/scheduling.md#fallbacks).
    allowed: frozenset[str] | None = None

    @classmethod
    def sent(cls, priority: int, tenant: str | None, deadline: float | None, now: float,
             allowed: frozenset[str] | None = None) -> HostTerms:
        """The terms of a request whose `deadline` is on the front's clock (`now`: that clock's
        reading); a deadline already past leaves no time (served at once or not at all)."""
        return cls(priority, tenant, None if deadline is None else max(0.0, deadline - now), allowed)

    def may_serve(self) -> Callable[[str], bool] | None:
        """ModelManager.acquire's filter of the fallbacks, or None when every one may serve."""
        allowed = self.allowed
        return None if allowed is None else allowed.__contains__

    def deadline(self, now: float) -> float | None:
        """The deadline on the agent's clock (`now`: its reading as the call arrives)."""
        return None if self.max_wait is None else now + self.max_wait
