"""A local HTTP server that answers the way the Hugging Face Hub does.

Just the endpoints huggingface_hub 2.x uses to list a model repo and fetch
files, so `HfApi.model_info`, `list_repo_files` and `hf_hub_download` run
their real code paths (HEAD for metadata, ETag-named blobs, X-Repo-Commit
pinning, Range resumes) against files a test writes:

    GET  /api/models/{ns}/{repo}[/revision/{rev}]     model_info (siblings; sizes with ?blobs=true)
    GET  /api/models/{ns}/{repo}/tree/{rev}[/{path}]  list_repo_tree / list_repo_files
    GET  /api/models/{ns}/{repo}/refs                 branches (llama.cpp's -hf resolves `main` with it)
    HEAD /{ns}/{repo}/resolve/{rev}/{file}            file metadata: X-Repo-Commit, ETag, Content-Length
    GET  /{ns}/{repo}/resolve/{rev}/{file}            file bytes, `Range: bytes=a-b` answered with 206

Errors carry the `X-Error-Code` header (RepoNotFound, RevisionNotFound,
EntryNotFound) that huggingface_hub maps to its typed exceptions. Every
request is recorded in `FakeHub.requests` so tests can count downloads.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeHub", "Request"]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _Repo:
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def commit(self) -> str:
        """Content-addressed, so adding a file makes a new 'commit' like a push would."""
        h = hashlib.sha1()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return h.hexdigest()


def _sibling(name: str, data: bytes, blobs: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"rfilename": name}
    if blobs:
        entry.update(
            size=len(data),
            blobId=hashlib.sha1(data).hexdigest(),
            lfs={"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134},
        )
    return entry


class FakeHub:
    """Start with `with FakeHub() as hub:`; point huggingface_hub at `hub.endpoint`."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.requests: list[Request] = []
        self._cut_once: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content

    def add_file(self, repo_id: str, path: str, data: bytes) -> None:
        self.repos.setdefault(repo_id, _Repo()).files[path] = data

    def commit(self, repo_id: str) -> str:
        return self.repos[repo_id].commit

    def cut_connection_once(self, repo_id: str, path: str, after_bytes: int) -> None:
        """The next GET of this file sends `after_bytes` bytes, then drops the connection."""
        self._cut_once[(repo_id, path)] = after_bytes

    def file_gets(self, path_suffix: str) -> list[Request]:
        return [r for r in self.requests
                if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(path_suffix)]

    # -- lifecycle

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "FakeHub not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fakehub", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


_API_RE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)"
                     r"(?:/revision/(?P<rev>[^/]+)|/tree/(?P<trev>[^/]+)(?P<tpath>/.*)?|(?P<refs>/refs))?$")
_RESOLVE_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _record(self) -> None:
        with self.fake._lock:
            self.fake.requests.append(Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(status, body, {"Content-Type": "application/json", "X-Error-Code": code,
                                  "X-Error-Message": message, **(extra or {})})

    def _repo_and_rev(self, repo_id: str, rev: str) -> _Repo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if rev not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        self._record()
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        if (m := _API_RE.match(path)) and self.command == "GET":
            repo_id = m["repo"]
            if m["refs"] is not None:
                return self._refs(repo_id)
            if m["trev"] is not None:
                return self._tree(repo_id, m["trev"], (m["tpath"] or "").strip("/"))
            blobs = "true" in [v.lower() for v in query.get("blobs", [])]
            return self._model_info(repo_id, m["rev"] or "main", blobs=blobs)
        if m := _RESOLVE_RE.match(path):
            return self._resolve(m["repo"], m["rev"], m["file"])
        self._error(404, "NotFound", f"no route for {self.command} {path}")

    def _model_info(self, repo_id: str, rev: str, blobs: bool) -> None:
        repo = self._repo_and_rev(repo_id, rev)
        if repo is None:
            return
        ns = repo_id.split("/")[0]
        info = {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": ns,
            "sha": repo.commit,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "createdAt": "2025-01-01T00:00:00.000Z",
            "private": False,
            "disabled": False,
            "gated": False,
            "library_name": "gguf",
            "tags": ["gguf"],
            "siblings": [_sibling(n, d, blobs) for n, d in sorted(repo.files.items())],
        }
        self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})

    def _refs(self, repo_id: str) -> None:
        repo = self._repo_and_rev(repo_id, "main")
        if repo is None:
            return
        refs = {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": repo.commit}],
                "tags": [], "converts": []}
        self._send(200, json.dumps(refs).encode(), {"Content-Type": "application/json"})

    def _tree(self, repo_id: str, rev: str, under: str) -> None:
        repo = self._repo_and_rev(repo_id, rev)
        if repo is None:
            return
        entries = []
        for name, data in sorted(repo.files.items()):
            if under and not name.startswith(under + "/"):
                continue
            s = _sibling(name, data, True)
            entries.append({"type": "file", "oid": s["blobId"], "size": s["size"], "path": name, "lfs": {
                "oid": s["lfs"]["sha256"], "size": s["size"], "pointerSize": 134}})
        self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})

    def _resolve(self, repo_id: str, rev: str, file: str) -> None:
        repo = self._repo_and_rev(repo_id, rev)
        if repo is None:
            return
        data = repo.files.get(file)
        if data is None:
            self._error(404, "EntryNotFound", f"{file} does not exist on {rev}", {"X-Repo-Commit": repo.commit})
            return
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": repo.commit,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Accept-Ranges": "bytes",
        }
        status, body = 200, data
        rng = self.headers.get("Range")
        if rng and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())):
            start = int(m[1])
            end = int(m[2]) if m[2] else len(data) - 1
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            end = min(end, len(data) - 1)
            status, body = 206, data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        cut = None
        if self.command == "GET":
            with self.fake._lock:
                cut = self.fake._cut_once.pop((repo_id, file), None)
        if cut is None:
            self._send(status, body, headers)
            return
        # Promise the whole body, deliver part of it, hang up: a dropped download.
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.close_connection = True


def talk_to_fake_hubs(monkeypatch: Any, unset: tuple[str, ...] = ()) -> None:
    """huggingface_hub in this process, ready for a FakeHub on 127.0.0.1: online, no token,
    no proxy, none of the cache variables in `unset` (plus the hub's own), a fresh HTTP client."""
    import huggingface_hub
    from huggingface_hub.utils import close_session

    for var in (*unset, "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read at import time
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    close_session()  # the shared HTTP client reads proxy settings when created


def dead_endpoint() -> str:
    """A Hub address on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"
