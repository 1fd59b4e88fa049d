"""How much memory a child uses, read from the operating system."""

from __future__ import annotations

import psutil


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a process, or None when it is gone."""
    if pid is None:
        return None
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.Error, OSError):
        return None
