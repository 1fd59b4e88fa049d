"""The one ring buffer for a model's output lines.

A model's ring outlives each of its children, so the last words of a crashed
model stay readable (/logs); a child that fails to load reports only the
lines it printed itself, counted from a mark taken when it started.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator


class LogRing:
    def __init__(self, maxlen: int):
        self._lines: deque[str] = deque(maxlen=maxlen)
        self.total = 0  # lines ever appended: a mark for since()

    def append(self, line: str) -> None:
        self._lines.append(line)
        self.total += 1

    def since(self, mark: int) -> list[str]:
        """The lines appended after `mark` (a past `total`) that are still kept."""
        n = min(self.total - mark, len(self._lines))
        return list(self._lines)[len(self._lines) - n:] if n > 0 else []

    def resize(self, maxlen: int) -> None:
        if maxlen != self._lines.maxlen:
            self._lines = deque(self._lines, maxlen=maxlen)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._lines))

    def __len__(self) -> int:
        return len(self._lines)
