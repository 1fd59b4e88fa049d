"""The front's first second: it knows no host until every agent has reported once.

A front answers as soon as it listens, but it learns the hosts from their
agents' first reports (about a second later; more while Ray starts the agents).
A request placed before them would be refused ("no host is up") or placed on a
partial view (a model too big for the hosts that did report). It waits for them
instead, at most `cluster.start_wait` seconds after the front started, as a
request waits for a load on one host; `/health` says `starting` meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("router.cluster")


class FirstReports:
    """Set once every host the front knows has reported; `start_wait()` bounds the wait
    (read at each call: a reloaded catalogue may change it)."""

    def __init__(self, start_wait: Callable[[], float]):
        self._start_wait = start_wait
        self._since = time.monotonic()
        self._done = asyncio.Event()
        self._late = False  # start_wait ran out first (logged once)

    @property
    def starting(self) -> bool:
        return not self._done.is_set() and time.monotonic() < self._since + self._start_wait()

    def saw(self, reported: Sequence[bool]) -> None:
        """After a round of reports: whether each known host has reported."""
        if self._done.is_set():
            return
        if reported and all(reported):
            log.info("every host reported (%d, %.1f s after start)", len(reported), time.monotonic() - self._since)
            self._done.set()
        elif not self.starting and not self._late:
            self._late = True
            log.warning("not every host reported within cluster.start_wait (%g s): placing on the %d that did",
                        self._start_wait(), sum(reported))

    async def wait(self, deadline: float | None = None) -> None:
        """Until every host has reported, or start_wait has passed since the front started, or
        the request's `deadline` (time.monotonic()) came first: it is then placed on the hosts
        that did report, and the host's answer says the deadline passed."""
        left = self._since + self._start_wait() - time.monotonic()
        if deadline is not None:
            left = min(left, deadline - time.monotonic())
        if self._done.is_set() or left <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), left)
