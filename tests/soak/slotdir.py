"""The KV slot folder of a soak: a small tmpfs when this process may mount one,
so "the disk is full" is real (llama-server's save fails with ENOSPC), else a
plain folder where only the router's own disk budget (`slot_save_max_bytes`)
is hit. Also the reading of llama-server's slot file header, to check at the
end that every file left under a final name is whole."""

from __future__ import annotations

import os
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# llama.cpp's llama_state_seq_save_file(): magic "ggsq", version, token count, tokens, state.
SEQ_MAGIC = 0x67677371
FILLER = "soak-disk-filler"


class SlotFolder:
    def __init__(self, path: Path, tmpfs_bytes: int):
        self.path = path
        self.tmpfs_bytes = tmpfs_bytes
        self.mounted = False
        self.why_not_tmpfs = ""

    def __enter__(self) -> SlotFolder:
        self.path.mkdir(parents=True, exist_ok=True)
        if os.environ.get("SOAK_NO_TMPFS"):
            self.why_not_tmpfs = "SOAK_NO_TMPFS is set"
            return self
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.tmpfs_bytes},mode=0700",
                                   "soak-slots", str(self.path)], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.why_not_tmpfs = str(e)
            return self
        self.mounted = done.returncode == 0
        self.why_not_tmpfs = "" if self.mounted else (done.stderr.strip() or f"mount exited {done.returncode}")
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.mounted:
            return
        for _ in range(20):  # a child that still holds a file open makes umount busy for a moment
            if subprocess.run(["umount", str(self.path)], capture_output=True, timeout=10).returncode == 0:
                self.mounted = False
                return
            time.sleep(0.25)
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=10)
        self.mounted = False

    def fill(self) -> int:
        """Fill the tmpfs to the last byte; returns the bytes written (0: not a tmpfs)."""
        if not self.mounted:
            return 0
        written = 0
        fd = os.open(self.path / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            block = b"\0" * 65536
            while True:
                try:
                    written += os.write(fd, block)
                except OSError:
                    if len(block) == 1:
                        break
                    block = block[:len(block) // 2]  # the last few bytes too
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        return written

    def free(self) -> None:
        (self.path / FILLER).unlink(missing_ok=True)


@dataclass(frozen=True)
class SlotFileState:
    name: str
    size: int
    words: int | None  # the header's count of 32-bit words that follow it (tokens and their framing)
    problem: str | None


def read_slot_file(path: Path) -> SlotFileState:
    """A slot file's header: whole files start with the magic, a version and a
    count of the 32-bit words of the prompt that follow, and hold at least those."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        return SlotFileState(path.name, 0, None, f"unreadable: {e}")
    if len(head) < 12:
        return SlotFileState(path.name, size, None, f"only {size} bytes")
    magic, _version, words = struct.unpack("<III", head)
    if magic != SEQ_MAGIC:
        return SlotFileState(path.name, size, None, f"bad magic {magic:#x}")
    if size < 12 + 4 * words:
        return SlotFileState(path.name, size, words, f"{size} bytes cannot hold its {words}-word prompt")
    return SlotFileState(path.name, size, words, None)
