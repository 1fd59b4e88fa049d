"""The queue discipline: in which order the requests waiting for models are served.

Pure, like the scheduler that uses it: no I/O, no clock of its own.

- Higher priority first. A request's priority is a number; the named
  classes (`PRIORITY_CLASSES`) map onto numbers here and nowhere else.
- Within one priority, tenants (an API key's identity; unauthenticated
  requests are one tenant, `None`) take turns: start-time fair queuing
  with one unit per request. A tenant's next request takes the turn after
  its previous one, but never one that was already served: a tenant with
  nothing waiting joins at the current turn, with no turns saved up. So a
  burst of 200 from one tenant holds another tenant's single request behind
  one request of the burst, not behind all of it.
- Within a tenant's turn, first come first served. With one tenant and one
  priority the order is exactly the order of arrival.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import NamedTuple

PRIORITY_CLASSES: dict[str, int] = {"high": 10, "normal": 0, "low": -10}
DEFAULT_PRIORITY = PRIORITY_CLASSES["normal"]


def priority_value(value: str | int) -> int:
    """The number of a priority class (`high`, `normal`, `low`) or of a number (or its text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in PRIORITY_CLASSES:
        return PRIORITY_CLASSES[text]
    try:
        if not isinstance(value, bool):
            return int(text)
    except ValueError:
        pass
    raise ValueError(f"priority {value!r}: expected one of {', '.join(PRIORITY_CLASSES)} or a whole number")


@dataclass(slots=True, eq=False)
class Waiter:
    """A request waiting for `model`; never changed once made (not frozen: a frozen
    dataclass takes four times as long to make, and one is made per request)."""

    ticket: int
    model: str
    priority: int
    tenant: str | None
    key: tuple[int, int, int]  # (-priority, turn, arrival): the smaller is served first
    since: float = 0.0  # when it started waiting (the scheduler's clock)
    deadline: float | None = None  # past it the request gives up waiting

    @property
    def turn(self) -> int:
        return self.key[1]


class QueuePosition(NamedTuple):
    position: int  # 1: the next request its model serves
    ahead: int  # requests waiting for any model that are served before it


def served_before_swap(waiter: Waiter, head: Waiter) -> bool:
    """Whether `waiter`, waiting for a model when the swap away from it was decided for
    `head`, is served by that model before the swap: a higher priority always is, a lower
    never; at the same priority, the head's own tenant's requests are (first come first
    served, as without fair share) and another tenant's are when their turn comes first."""
    if waiter.priority != head.priority:
        return waiter.priority > head.priority
    return waiter.tenant == head.tenant or waiter.key < head.key


class WaitQueue:
    """The waiting requests, kept in the order they are served."""

    def __init__(self) -> None:
        self._waiters: dict[int, Waiter] = {}
        self._order: list[Waiter] = []  # sorted by key
        self._next_turn: dict[tuple[int, str | None], int] = {}  # a tenant's next turn, per priority
        self._served_turn: dict[int, int] = {}  # the latest turn served, per priority
        self._waiting: dict[tuple[int, str | None], int] = {}  # how many wait, per (priority, tenant)
        self._at_priority: dict[int, int] = {}  # how many wait, per priority
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._waiters)

    def __contains__(self, ticket: int) -> bool:
        return ticket in self._waiters

    def get(self, ticket: int) -> Waiter | None:
        return self._waiters.get(ticket)

    def tickets(self) -> list[int]:
        return list(self._waiters)

    def in_order(self) -> list[Waiter]:
        """Every waiting request, the first served first (a copy: safe to change the queue meanwhile)."""
        return list(self._order)

    def count(self, model: str | None = None) -> int:
        if model is None:
            return len(self._waiters)
        return sum(1 for w in self._order if w.model == model)

    def add(self, ticket: int, model: str, priority: int = DEFAULT_PRIORITY, tenant: str | None = None,
            since: float = 0.0, deadline: float | None = None) -> Waiter:
        cls = (priority, tenant)
        turn = max(self._served_turn.get(priority, 0), self._next_turn.get(cls, 0))
        self._next_turn[cls] = turn + 1
        self._waiting[cls] = self._waiting.get(cls, 0) + 1
        self._at_priority[priority] = self._at_priority.get(priority, 0) + 1
        w = Waiter(ticket, model, priority, tenant, (-priority, turn, next(self._arrivals)), since, deadline)
        self._waiters[ticket] = w
        if not self._order or self._order[-1].key < w.key:
            self._order.append(w)  # one tenant, one priority: always the last
        else:
            bisect.insort(self._order, w, key=_key)
        return w

    def remove(self, ticket: int, served: bool = False) -> Waiter | None:
        """Take a request out of the queue: `served` (granted) moves its priority's turn on."""
        w = self._waiters.pop(ticket, None)
        if w is None:
            return None
        if self._order[0] is w:
            del self._order[0]  # the usual case: the first served
        else:
            del self._order[bisect.bisect_left(self._order, w.key, key=_key)]
        if served and w.turn > self._served_turn.get(w.priority, -1):
            self._served_turn[w.priority] = w.turn
        cls = (w.priority, w.tenant)
        self._waiting[cls] -= 1
        if not self._waiting[cls]:
            # Nothing of this tenant waits at this priority: it starts afresh at the current turn.
            del self._waiting[cls], self._next_turn[cls]
        self._at_priority[w.priority] -= 1
        if not self._at_priority[w.priority]:
            # Nobody waits at this priority: no turns to keep.
            del self._at_priority[w.priority]
            self._served_turn.pop(w.priority, None)
        return w

    def position(self, ticket: int) -> QueuePosition | None:
        """Where a waiting request stands (None when it is not waiting)."""
        w = self._waiters.get(ticket)
        if w is None:
            return None
        ahead = bisect.bisect_left(self._order, w.key, key=_key)
        same = sum(1 for o in self._order[:ahead] if o.model == w.model)
        return QueuePosition(same + 1, ahead)

    def past_deadline(self, now: float) -> list[Waiter]:
        return [w for w in self._order if w.deadline is not None and w.deadline <= now]

    def next_deadline(self) -> float | None:
        return min((w.deadline for w in self._order if w.deadline is not None), default=None)


def _key(w: Waiter) -> tuple[int, int, int]:
    return w.key
