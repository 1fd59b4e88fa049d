"""The catalogue: one YAML file read into typed, validated dataclasses.

Every default lives here, and every validation error names the file, the
key and what was expected, so a user can fix a typo without reading code.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

DEFAULT_COMMAND = (
    "llama-server", "--model", "$path", "--alias", "$name",
    "--host", "$host", "--port", "$port",
)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """A catalogue that cannot be used, with the place that is wrong."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key = source, key
        super().__init__(f"{source}: {key}: {message}")


@dataclass(frozen=True)
class SpawnSpec:
    """How to start a backend: argv template and its health endpoint."""

    command: tuple[str, ...] = DEFAULT_COMMAND
    health_endpoint: str = "/health"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str | None = None
    aliases: tuple[str, ...] = ()
    group: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    spawn: SpawnSpec | None = None
    mmproj: str | None = None
    state: str = "manual"
    ttl: float | None = None
    unlisted: bool = False
    allow_args: tuple[str, ...] = ()  # flags a load request may add to the command line

    def launch_key(self) -> tuple:
        """What a running child was started from: a change here needs a restart."""
        return (self.path, self.args, self.env, self.spawn, self.mmproj)

    @property
    def group_key(self) -> str:
        """Models share a group only when they name one; otherwise each is alone."""
        return f"group:{self.group}" if self.group else f"model:{self.name}"


@dataclass(frozen=True)
class RouterSettings:
    host: str = "127.0.0.1"
    port: int = 8082
    models_max: int = 1
    port_range: tuple[int, int] = (50000, 50999)
    health_timeout: float = 120.0
    stop_timeout: float = 10.0
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    max_body_bytes: int = 64 * 1024 * 1024
    log_lines: int = 500
    # Secrets: never part of repr(), so a logged config cannot leak them.
    admin_token: str | None = field(default=None, repr=False)
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    notify_model_swap: bool = False
    startup_model: str | None = None
    ttl: float = 0.0  # idle seconds before a model unloads; 0 = never (a model's own ttl wins)
    drain_timeout: float = 30.0
    watch_config: bool = True
    swap_patience: float = 2.0  # seconds a busy model being swapped out keeps taking new requests
    # KV cache persistence (router/kvcache.py): None = on for llama-server children.
    kv_persistence: bool | None = None
    slot_save_path: str | None = None  # None = <cache folder>/slots
    slot_save_max_bytes: int = 4 * 1024 ** 3
    slot_save_timeout: float = 30.0

    ui_path: str | None = None  # a built llama.cpp WebUI (folder with index.html) served at "/"


@dataclass(frozen=True)
class SourcesSpec:
    """Where models are discovered besides the `models:` list."""

    dirs: tuple[str, ...] = ()
    hf_cache: bool = True


@dataclass(frozen=True)
class Config:
    router: RouterSettings = field(default_factory=RouterSettings)
    spawn: SpawnSpec = field(default_factory=SpawnSpec)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    sources: SourcesSpec = field(default_factory=SourcesSpec)
    source: str = "<defaults>"

    def resolve(self, name: str) -> ModelSpec | None:
        """Find a model by name or alias."""
        spec = self.models.get(name)
        if spec is not None:
            return spec
        for spec in self.models.values():
            if name in spec.aliases:
                return spec
        return None

    def spawn_for(self, spec: ModelSpec) -> SpawnSpec:
        return spec.spawn or self.spawn

    def with_router(self, **changes: Any) -> "Config":
        """Command-line values override the file."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, router=replace(self.router, **changes))


def expand_env(value: str, source: str, key: str) -> str:
    def sub(m: re.Match[str]) -> str:
        var = m.group(1)
        if var not in os.environ:
            raise ConfigError(source, key, f"environment variable ${{{var}}} is not set")
        return os.environ[var]

    return _ENV_RE.sub(sub, value)


class _Reader:
    """Typed getters over one mapping that report the dotted key on error."""

    def __init__(self, data: Any, source: str, prefix: str, allowed: set[str]):
        self.source, self.prefix = source, prefix
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(source, prefix or "<top>", f"expected a mapping, got {_kind(data)}")
        unknown = sorted(set(map(str, data)) - allowed)
        if unknown:
            raise ConfigError(source, self.key(unknown[0]),
                              f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        self.data = data

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), message)

    def str(self, name: str, default: Any = None, *, allow_none: bool = True) -> Any:
        v = self.data.get(name, default)
        if v is None and allow_none:
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise self.fail(name, f"expected a string, got {_kind(v)}")
        return expand_env(str(v), self.source, self.key(name))

    def number(self, name: str, default: float, *, integer: bool = False, minimum: float = 0) -> Any:
        v = self.data.get(name, default)
        if isinstance(v, str):
            v = expand_env(v, self.source, self.key(name))
            try:
                v = int(v) if integer else float(v)
            except ValueError:
                raise self.fail(name, f"expected {'an integer' if integer else 'a number'}, got {v!r}") from None
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            raise self.fail(name, f"expected {'an integer' if integer else 'a number'}, got {_kind(v)}")
        if v < minimum:
            raise self.fail(name, f"expected a value >= {minimum}, got {v}")
        return v

    def bool(self, name: str, default: bool) -> bool:
        v = self.data.get(name, default)
        if not isinstance(v, bool):
            raise self.fail(name, f"expected true or false, got {_kind(v)}")
        return v

    def str_list(self, name: str) -> tuple[str, ...]:
        v = self.data.get(name, [])
        if v is None:
            return ()
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list):
            raise self.fail(name, f"expected a list of strings, got {_kind(v)}")
        out = []
        for i, item in enumerate(v):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise ConfigError(self.source, f"{self.key(name)}[{i}]", f"expected a string, got {_kind(item)}")
            out.append(expand_env(str(item), self.source, f"{self.key(name)}[{i}]"))
        return tuple(out)


def _kind(v: Any) -> str:
    if v is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


_ROUTER_KEYS = {
    "host", "port", "models_max", "port_range", "health_timeout", "stop_timeout",
    "connect_timeout", "read_timeout", "max_body_bytes", "log_lines", "admin_token", "api_keys",
    "notify_model_swap", "startup_model", "ttl", "drain_timeout", "watch_config", "swap_patience",
    "kv_persistence", "slot_save_path", "slot_save_max_bytes", "slot_save_timeout",
    "ui_path",
}
_MODEL_KEYS = {
    "path", "aliases", "group", "args", "env", "spawn", "mmproj", "state", "ttl", "unlisted", "allow_args",
}
# Flags the router itself sets; no request may ever supply them.
RESERVED_FLAGS = frozenset({
    "-m", "--model", "--host", "--port", "-a", "--alias", "-mm", "--mmproj", "--api-key",
    "--api-key-file", "--path", "--models-dir", "--models-preset", "-hf", "--hf-repo", "-mu",
    "--model-url", "--ssl-key-file", "--ssl-cert-file", "--log-file", "--slot-save-path",
})
MIN_SECRET_LEN = 8


def _parse_router(data: Any, source: str) -> RouterSettings:
    r = _Reader(data, source, "router", _ROUTER_KEYS)
    d = RouterSettings()
    port_range = r.data.get("port_range", list(d.port_range))
    if (not isinstance(port_range, list) or len(port_range) != 2
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in port_range)
            or not 1024 <= port_range[0] <= port_range[1] <= 65535):
        raise r.fail("port_range", "expected [first, last] with 1024 <= first <= last <= 65535")
    port = r.number("port", d.port, integer=True)
    if not 0 <= port <= 65535:
        raise r.fail("port", f"expected a port number 0-65535, got {port}")
    admin_token = r.str("admin_token")
    if admin_token is not None and len(admin_token) < MIN_SECRET_LEN:
        raise r.fail("admin_token", f"expected a secret of at least {MIN_SECRET_LEN} characters")
    api_keys = r.str_list("api_keys")
    for i, k in enumerate(api_keys):
        if len(k) < MIN_SECRET_LEN or any(c.isspace() for c in k):
            raise ConfigError(source, f"router.api_keys[{i}]",
                              f"expected a key of at least {MIN_SECRET_LEN} characters without spaces")
    ui_path = r.str("ui_path")
    if ui_path is not None:
        ui_dir = Path(ui_path).expanduser()
        if not ui_dir.is_absolute() and not source.startswith("<"):
            ui_dir = Path(source).expanduser().parent / ui_dir
        if not (ui_dir / "index.html").is_file():
            raise r.fail("ui_path", f"expected a folder holding a built WebUI (index.html), got {ui_path!r}")
        ui_path = str(ui_dir.resolve())
    return RouterSettings(
        host=r.str("host", d.host, allow_none=False),
        port=port,
        models_max=r.number("models_max", d.models_max, integer=True),
        port_range=(port_range[0], port_range[1]),
        health_timeout=float(r.number("health_timeout", d.health_timeout, minimum=0.1)),
        stop_timeout=float(r.number("stop_timeout", d.stop_timeout, minimum=0.1)),
        connect_timeout=float(r.number("connect_timeout", d.connect_timeout, minimum=0.1)),
        read_timeout=float(r.number("read_timeout", d.read_timeout, minimum=0.1)),
        max_body_bytes=r.number("max_body_bytes", d.max_body_bytes, integer=True, minimum=1024),
        log_lines=r.number("log_lines", d.log_lines, integer=True, minimum=1),
        admin_token=admin_token,
        api_keys=api_keys,
        notify_model_swap=r.bool("notify_model_swap", d.notify_model_swap),
        startup_model=r.str("startup_model"),
        ttl=float(r.number("ttl", d.ttl)),
        drain_timeout=float(r.number("drain_timeout", d.drain_timeout)),
        watch_config=r.bool("watch_config", d.watch_config),
        swap_patience=float(r.number("swap_patience", d.swap_patience)),
        kv_persistence=None if r.data.get("kv_persistence") is None else r.bool("kv_persistence", True),
        slot_save_path=_opt_path(r.str("slot_save_path")),
        slot_save_max_bytes=r.number("slot_save_max_bytes", d.slot_save_max_bytes, integer=True),
        slot_save_timeout=float(r.number("slot_save_timeout", d.slot_save_timeout, minimum=0.1)),
        ui_path=ui_path,
    )


def _opt_path(value: str | None) -> str | None:
    return str(Path(value).expanduser()) if value else None


def _parse_spawn(data: Any, source: str, prefix: str) -> SpawnSpec:
    r = _Reader(data, source, prefix, {"command", "health_endpoint"})
    command = r.str_list("command") if "command" in r.data else DEFAULT_COMMAND
    if not command:
        raise r.fail("command", "expected a non-empty list: the program and its arguments")
    health = r.str("health_endpoint", "/health", allow_none=False)
    if not health.startswith("/"):
        raise r.fail("health_endpoint", f"expected a path starting with '/', got {health!r}")
    return SpawnSpec(command=command, health_endpoint=health)


def _parse_model(name: Any, data: Any, source: str) -> ModelSpec:
    key = f"models.{name}"
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(source, key, "expected a model name of letters, digits and . _ : + - "
                          "(no '/', spaces or control characters, at most 128 characters)")
    r = _Reader(data, source, key, _MODEL_KEYS)
    env_data = r.data.get("env") or {}
    if not isinstance(env_data, dict):
        raise r.fail("env", f"expected a mapping of NAME: value, got {_kind(env_data)}")
    env = []
    for k, v in env_data.items():
        if isinstance(v, (dict, list)) or v is None:
            raise ConfigError(source, f"{key}.env.{k}", f"expected a string, got {_kind(v)}")
        env.append((str(k), expand_env(str(v), source, f"{key}.env.{k}")))
    spawn = _parse_spawn(r.data["spawn"], source, f"{key}.spawn") if "spawn" in r.data else None
    path = r.str("path")
    if path is None and spawn is None:
        raise r.fail("path", "expected the path of a GGUF file (or a per-model spawn command)")
    state = r.str("state", "manual", allow_none=False)
    if state not in ("manual", "auto"):
        raise r.fail("state", f"expected 'manual' or 'auto', got {state!r}")
    aliases = r.str_list("aliases")
    for a in aliases:
        if not NAME_RE.match(a):
            raise r.fail("aliases", f"alias {a!r} is not a valid model name")
    ttl = r.data.get("ttl")
    allow_args = r.str_list("allow_args")
    for i, flag in enumerate(allow_args):
        if not re.fullmatch(r"--?[A-Za-z0-9][A-Za-z0-9-]*", flag) or flag in RESERVED_FLAGS:
            raise ConfigError(source, f"{key}.allow_args[{i}]",
                              f"expected a llama-server flag such as --temp (not one the router sets), got {flag!r}")
    return ModelSpec(
        name=name,
        path=str(Path(path).expanduser()) if path else None,
        aliases=aliases,
        group=r.str("group"),
        args=r.str_list("args"),
        env=tuple(env),
        spawn=spawn,
        mmproj=r.str("mmproj"),
        state=state,
        ttl=None if ttl is None else float(r.number("ttl", 0)),
        unlisted=r.bool("unlisted", False),
        allow_args=allow_args,
    )


def _parse_sources(data: Any, source: str) -> SourcesSpec:
    r = _Reader(data, source, "sources", {"dirs", "hf_cache"})
    dirs = tuple(str(Path(d).expanduser()) for d in r.str_list("dirs"))
    return SourcesSpec(dirs=dirs, hf_cache=r.bool("hf_cache", True))


def parse_config(data: Any, source: str = "<config>") -> Config:
    top = _Reader(data, source, "", {"router", "spawn", "models", "sources"})
    router = _parse_router(top.data.get("router"), source)
    spawn = _parse_spawn(top.data.get("spawn"), source, "spawn")
    models_data = top.data.get("models") or {}
    if not isinstance(models_data, dict):
        raise ConfigError(source, "models", f"expected a mapping of name: settings, got {_kind(models_data)}")
    models: dict[str, ModelSpec] = {}
    seen: dict[str, str] = {}
    for name, entry in models_data.items():
        spec = _parse_model(name, entry, source)
        for n in (spec.name, *spec.aliases):
            if n in seen:
                raise ConfigError(source, f"models.{name}", f"name or alias {n!r} is already used by {seen[n]!r}")
            seen[n] = spec.name
        models[spec.name] = spec
    return Config(router=router, spawn=spawn, models=models,
                  sources=_parse_sources(top.data.get("sources"), source), source=source)


def load_config(path: str | os.PathLike[str]) -> Config:
    source = str(path)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(source, "<file>", f"cannot read: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<yaml>"
        raise ConfigError(source, where, f"invalid YAML: {getattr(e, 'problem', None) or e}") from None
    return parse_config(data, source)


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "llama-router" / "config.yaml"


def default_slot_save_path() -> Path:
    return default_cache_dir() / "slots"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llama-router"
