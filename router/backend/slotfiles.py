"""Saved KV-cache files on disk: their names, their fingerprints, the disk budget.

A slot file written by llama-server is raw KV state: restoring it into a child
that runs another model file, another context size, other cache types or
another build gives wrong answers or a failed restore at best. So every file
name carries a fingerprint of everything that shapes the cache, and the router
only ever restores a file whose fingerprint equals the new child's.

The fingerprint is deliberately broad: it covers the child's whole argv (every
argument that names an existing file counts by its identity: real path, size,
mtime), except for a short list of arguments known not to touch the cache
(host, port, sampling defaults, logging...). An argument this module does not
know therefore invalidates saved files instead of letting a stale cache through:
a recomputed prompt costs seconds, a wrong cache costs a wrong answer.

Nothing here talks to a child; router/core/kv_persistence.py does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("router.kvcache")

SAVE_PATH_FLAG = "--slot-save-path"
SWA_FULL_FLAG = "--swa-full"
PARTIAL_SUFFIX = ".partial"
PARTIAL_MAX_AGE_S = 600.0

# Arguments that do not change what a slot's KV cache holds, with how many
# values each one takes. Everything else is part of the fingerprint.
_NEUTRAL_ARGS: dict[str, int] = {
    "--host": 1, "--port": 1, "-a": 1, "--alias": 1, "-t": 1, "--threads": 1,
    "-tb": 1, "--threads-batch": 1, "--api-key": 1, "--api-key-file": 1,
    "--log-file": 1, "-lv": 1, "--log-verbosity": 1, "--verbosity": 1, "-v": 0, "--verbose": 0,
    "--log-verbose": 0, "--log-disable": 0, "--log-prefix": 0, "--log-timestamps": 0,
    "--log-colors": 1, "--temp": 1, "--temperature": 1, "--top-k": 1, "--top-p": 1,
    "--min-p": 1, "-s": 1, "--seed": 1, "-n": 1, "--predict": 1, "--n-predict": 1,
    "--metrics": 0, "--slots": 0, "--no-slots": 0, "--props": 0, "-to": 1, "--timeout": 1,
    "--path": 1, "--api-prefix": 1, "--webui": 0, "--no-webui": 0, "--ui": 0, "--no-ui": 0,
    "--sleep-idle-seconds": 1, "--media-path": 1, SAVE_PATH_FLAG: 1,
}
_NEUTRAL_ENV = ("HOST", "PORT", "ALIAS", "THREADS", "KEY", "TOKEN", "LOG")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_FILE_RE = re.compile(r"^(?P<model>[A-Za-z0-9_-]+)\.(?P<fp>[0-9a-f]{16})\.slot(?P<slot>\d{1,4})\.bin$")


def model_prefix(model: str) -> str:
    """A file-name-safe stem for any model name; the hash keeps `a:b` and `a_b` apart."""
    digest = hashlib.sha256(model.encode("utf-8")).hexdigest()[:8]
    return f"{_UNSAFE.sub('_', model)[:64]}-{digest}"


def slot_file_name(model: str, fingerprint: str, slot: int) -> str:
    return f"{model_prefix(model)}.{fingerprint}.slot{slot}.bin"


def _file_identity(path: str) -> list[object]:
    st = os.stat(path)
    return [os.path.realpath(path), st.st_size, st.st_mtime_ns]


def fingerprint_parts(argv: Sequence[str], env: Mapping[str, str], version: str) -> dict[str, object]:
    """Everything that decides whether a saved cache fits a child (see the module doc)."""
    args: list[object] = []
    skip = 0
    for i, arg in enumerate(argv):
        if skip:
            skip -= 1
            continue
        flag = arg.partition("=")[0] if arg.startswith("-") else arg
        if i > 0 and flag in _NEUTRAL_ARGS:
            skip = 0 if "=" in arg else _NEUTRAL_ARGS[flag]
            continue
        if os.path.isfile(arg):
            args.append(_file_identity(arg))
        else:
            args.append(arg)
    llama_env = sorted((k, v) for k, v in env.items()
                       if k.startswith("LLAMA_ARG_") and not any(n in k for n in _NEUTRAL_ENV))
    return {"argv": args, "env": llama_env, "version": version}


def fingerprint(argv: Sequence[str], env: Mapping[str, str], version: str) -> str:
    parts = fingerprint_parts(argv, env, version)
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class SlotFile:
    path: Path
    fingerprint: str
    slot: int
    size: int
    mtime: float


def _our_files(directory: Path) -> Iterable[tuple[Path, re.Match[str], os.stat_result]]:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        m = _FILE_RE.match(entry.name)
        if m and entry.is_file(follow_symlinks=False):
            try:
                yield Path(entry.path), m, entry.stat(follow_symlinks=False)
            except OSError:
                continue


def model_files(directory: Path, model: str) -> list[SlotFile]:
    """Every saved slot file of `model`, whatever its fingerprint."""
    prefix = model_prefix(model)
    return [SlotFile(p, m["fp"], int(m["slot"]), st.st_size, st.st_mtime)
            for p, m, st in _our_files(directory) if m["model"] == prefix]


def enforce_budget(directory: Path, max_bytes: int) -> list[Path]:
    """Delete the oldest slot files until the rest fit in `max_bytes`; returns what went.

    Only files named like ours count: a file a user saved by hand through the
    /slots API is neither counted nor deleted. Leftover `.partial` files (a
    save cut short) are removed once they are old enough to be surely dead.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        for entry in os.scandir(directory):
            if (entry.name.endswith(PARTIAL_SUFFIX) and _FILE_RE.match(entry.name[:-len(PARTIAL_SUFFIX)])
                    and now - entry.stat(follow_symlinks=False).st_mtime > PARTIAL_MAX_AGE_S):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    except OSError:
        pass
    files = sorted(((st.st_mtime, st.st_size, p) for p, _, st in _our_files(directory)), key=lambda f: f[0])
    total = sum(size for _, size, _ in files)
    for _, size, path in files:
        if total <= max_bytes:
            break
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot delete old slot file %s: %s", path, e.strerror or e)
            continue
        total -= size
        removed.append(path)
    return removed
