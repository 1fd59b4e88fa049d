"""What the soak watches while it runs, each in its own thread so the client
load in the event loop never delays it: the router's event streams, and the
router's process (memory, file descriptors, children) sampled from /proc."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil


@dataclass
class Event:
    at: float  # time.time() when the harness read it (the router's order is the list's order)
    data: dict[str, Any]


class EventRecorder:
    """Every `data:` event of one server-sent-event stream, in the order the router wrote it.

    The router drops a subscriber that falls 1,000 events behind, which ends its
    stream: `ended_early` records that, since a stream with a hole proves nothing."""

    def __init__(self, base_url: str, path: str):
        self.path = path
        self.events: list[Event] = []
        self.ended_early = False
        self.error: str | None = None
        self._closing = False
        host, port = base_url.removeprefix("http://").split(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=None)
        self._conn.request("GET", path)
        self._resp = self._conn.getresponse()
        if self._resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {self._resp.status}")
        self._thread = threading.Thread(target=self._run, name=f"soak-sse{path}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in self._resp:
                if line.startswith(b"data: "):
                    self.events.append(Event(time.time(), json.loads(line[6:])))
        except (OSError, ValueError, http.client.HTTPException) as e:
            if not self._closing:
                self.error = f"{type(e).__name__}: {e}"
        if not self._closing:
            self.ended_early = True

    def close(self) -> None:
        self._closing = True
        try:
            sock = self._conn.sock
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(5)
        self._conn.close()


@dataclass
class Sample:
    at: float
    rss: int
    fds: int


@dataclass
class ProcessWatch:
    """The router's RSS and open file descriptors (every second), and its
    llama-server children (four times a second): how many run at once, and
    whether any process of this run's lives outside the router's tree."""

    pid: int
    run_dir: Path
    samples: list[Sample] = field(default_factory=list)
    max_live_children: int = 0
    live_children_over: list[tuple[float, list[int]]] = field(default_factory=list)
    strays: dict[int, str] = field(default_factory=dict)  # pid -> cmdline: ours, not the router's child
    ignore_pids: set[int] = field(default_factory=set)

    def start(self) -> ProcessWatch:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-proc", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        next_sample = 0.0
        while not self._stop.wait(0.25):
            now = time.time()
            if now >= next_sample:
                next_sample = now + 1.0
                sample = self.sample()
                if sample is not None:
                    self.samples.append(sample)
            self._check_children(now)

    def sample(self) -> Sample | None:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        except (OSError, StopIteration, ValueError):
            return None
        return Sample(time.time(), rss, fds)

    def _check_children(self, now: float) -> None:
        live = []
        for p in run_processes(self.run_dir):
            if p.pid in self.ignore_pids:
                continue
            try:
                parent, status, cmd = p.ppid(), p.status(), " ".join(p.cmdline())
            except psutil.Error:
                continue
            if status == psutil.STATUS_ZOMBIE:
                continue  # killed, not reaped yet: it holds no memory and serves nothing
            if parent != self.pid:
                self.strays[p.pid] = cmd
            else:
                live.append(p.pid)
        self.max_live_children = max(self.max_live_children, len(live))
        if len(live) > 1:
            self.live_children_over.append((now, live))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def run_processes(run_dir: Path) -> list[psutil.Process]:
    """Every llama-server whose command line names this run's folder (its models,
    its slot folder): the run's children, wherever their parent is. Other
    sessions' llama-servers on the same machine name other folders."""
    marker = str(run_dir)
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if cmd and "llama-server" in os.path.basename(cmd[0]) and any(marker in a for a in cmd[1:]):
            out.append(p)
    return out
