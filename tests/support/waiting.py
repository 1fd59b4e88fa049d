"""Waiting for a condition inside an event loop, with a deadline: the async twin
of tests/support/http.py's `wait_until`, for tests that must not sleep a fixed
time and hope that what they wait for has happened by then."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.005) -> Any:
    """Poll `check` (letting the loop run between tries) until it returns something
    truthy, and return that; the deadline only guards against a hang."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        await asyncio.sleep(every)
