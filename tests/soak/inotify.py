"""Which files a process opened in one folder, from the kernel (inotify, via ctypes).

The soak needs to know which slot files llama-server children *read*: a
restore is the only read of a file in the slot folder (llama-server saves with
"wb", the router only lists, stats, renames and deletes), so every
IN_CLOSE_NOWRITE event on a named file there is one restore reading that file.
That is how the soak proves that no `.partial` file was ever restored without
trusting the router's own account of what it restored.

Linux only; `available()` says whether it works here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_MASK = IN_CLOSE_WRITE | IN_CLOSE_NOWRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def available() -> bool:
    return hasattr(_libc, "inotify_init1")


@dataclass(frozen=True)
class FileEvent:
    at: float  # time.time() when read from the kernel (not when it happened)
    name: str
    kind: str  # "read" (closed, not written), "written", "renamed_to", "created", "deleted"


_KINDS = ((IN_CLOSE_NOWRITE, "read"), (IN_CLOSE_WRITE, "written"), (IN_MOVED_TO, "renamed_to"),
          (IN_CREATE, "created"), (IN_DELETE, "deleted"))


class FolderWatch:
    """Records every file event in `folder` in a thread until `close()`."""

    def __init__(self, folder: Path):
        self.events: list[FileEvent] = []
        self.overflowed = False
        self._fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if _libc.inotify_add_watch(self._fd, os.fsencode(folder), _MASK) < 0:
            err = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(err, f"inotify_add_watch({folder}) failed")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-inotify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.2)
            if ready:
                self._drain()
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            now = time.time()
            pos = 0
            while pos < len(data):
                _wd, mask, _cookie, length = _HEADER.unpack_from(data, pos)
                raw = data[pos + _HEADER.size:pos + _HEADER.size + length]
                pos += _HEADER.size + length
                if mask & IN_Q_OVERFLOW:
                    self.overflowed = True
                name = raw.rstrip(b"\0").decode("utf-8", "replace")
                if not name or mask & IN_ISDIR:
                    continue  # the folder itself being listed
                for bit, kind in _KINDS:
                    if mask & bit:
                        self.events.append(FileEvent(now, name, kind))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self._fd)
