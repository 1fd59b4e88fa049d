"""Where the front's listed requests wait on one host (cluster/requests.py): the agent
notes each one's ticket in its host's queue, says in its report where each stands now
(1: next), and in the grant where it joined (the reply's X-Queue-Position)."""

from __future__ import annotations

from collections.abc import Callable

from router.core.scheduler import Scheduler


class Places:
    def __init__(self) -> None:
        self._tickets: dict[str, int] = {}  # a listed request's id (the front's) -> its ticket here
        self._joined: dict[str, int] = {}  # -> its place when it joined the queue

    def watch(self, rid: str | None, scheduler: Scheduler) -> Callable[[int], None] | None:
        """The `queued` callback of ModelManager.acquire for request `rid` (None: not listed)."""
        if rid is None:
            return None

        def queued(ticket: int) -> None:
            self._tickets[rid] = ticket
            at = scheduler.queue_position(ticket)
            self._joined[rid] = at.position if at is not None else 0
        return queued

    def done(self, rid: str | None) -> int:
        """It waits no more (granted, refused, abandoned): where it joined (0: served at once)."""
        if rid is None:
            return 0
        self._tickets.pop(rid, None)
        return self._joined.pop(rid, 0)

    def now(self, scheduler: Scheduler) -> dict[str, int]:
        """Each listed request waiting here: its place in its model's queue now."""
        return {rid: at.position for rid, ticket in self._tickets.items()
                if (at := scheduler.queue_position(ticket)) is not None}
