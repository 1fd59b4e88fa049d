"""Reading the catalogue file into typed settings (catalogue/config.py).

Longer than 300 lines because every section's validation lives next to the
one typed reader they share, so each error names its key the same way.

Every validation error names the file, the key and what was expected, so a
user can fix a typo without reading code. The keys each section accepts are
the fields of its dataclass. YAML is read with the same YAML 1.2 library that
writes the catalogue (catalogue/yamlio.py), so a model named `no` or `on`
stays a name.
"""

from __future__ import annotations

import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from router.catalogue.config import (
    DEFAULT_COMMAND,
    MIN_SECRET_LEN,
    NAME_RE,
    NAME_RULE,
    PLACEMENTS,
    RESERVED_FLAGS,
    ROLES,
    RUNTIME_FIELDS,
    ApiKey,
    ClusterSettings,
    Config,
    ConfigError,
    MemorySettings,
    ModelSpec,
    Rate,
    RouterSettings,
    SourcesSpec,
    SpawnSpec,
)
from router.catalogue.tls import check_tls
from router.catalogue.values import budget_value, expand_env, parse_size
from router.catalogue.yamlio import YAMLReadError, read_yaml


def _keys(cls: type, *, exclude: tuple[str, ...] = ()) -> set[str]:
    """The file's keys of a section: its fields' names, or the `key` of a field's metadata."""
    return {f.metadata.get("key", f.name) for f in fields(cls) if f.name not in exclude}


_ROUTER_KEYS = _keys(RouterSettings)
_MODEL_KEYS = _keys(ModelSpec, exclude=("name",))
_SPAWN_KEYS = _keys(SpawnSpec)
_SOURCES_KEYS = _keys(SourcesSpec)
_CLUSTER_KEYS = _keys(ClusterSettings)
_MEMORY_KEYS = _keys(MemorySettings)
_API_KEY_KEYS = _keys(ApiKey)
_TOP_KEYS = _keys(Config, exclude=RUNTIME_FIELDS)


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

    def string(self, name: str, default: Any = None, *, allow_none: bool = True) -> Any:
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

    def boolean(self, name: str, default: bool) -> bool:
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
    admin_token = r.string("admin_token")
    if admin_token is not None and len(admin_token) < MIN_SECRET_LEN:
        raise r.fail("admin_token", f"expected a secret of at least {MIN_SECRET_LEN} characters")
    api_keys = _parse_api_keys(r.data.get("api_keys"), source)
    tls_cert, tls_key = _file_path(r.string("tls_cert"), source), _file_path(r.string("tls_key"), source)
    check_tls(tls_cert, tls_key, source)
    ui_path = r.string("ui_path")
    if ui_path is not None:
        ui_dir = Path(ui_path).expanduser()
        if not ui_dir.is_absolute() and not source.startswith("<"):
            ui_dir = Path(source).expanduser().parent / ui_dir
        if not (ui_dir / "index.html").is_file():
            raise r.fail("ui_path", f"expected a folder holding a built WebUI (index.html), got {ui_path!r}")
        ui_path = str(ui_dir.resolve())
    return RouterSettings(
        host=r.string("host", d.host, allow_none=False),
        port=port,
        models_max=r.number("models_max", d.models_max, integer=True),
        port_range=(port_range[0], port_range[1]),
        health_timeout=float(r.number("health_timeout", d.health_timeout, minimum=0.1)),
        stop_timeout=float(r.number("stop_timeout", d.stop_timeout, minimum=0.1)),
        connect_timeout=float(r.number("connect_timeout", d.connect_timeout, minimum=0.1)),
        read_timeout=float(r.number("read_timeout", d.read_timeout, minimum=0.1)),
        max_body_bytes=r.number("max_body_bytes", d.max_body_bytes, integer=True, minimum=1024),
        header_timeout=float(r.number("header_timeout", d.header_timeout)),
        body_timeout=float(r.number("body_timeout", d.body_timeout)),
        max_client_connections=r.number("max_client_connections", d.max_client_connections, integer=True),
        log_lines=r.number("log_lines", d.log_lines, integer=True, minimum=1),
        admin_token=admin_token,
        api_keys=api_keys,
        tls_cert=tls_cert,
        tls_key=tls_key,
        notify_model_swap=r.boolean("notify_model_swap", d.notify_model_swap),
        startup_model=r.string("startup_model"),
        preload=r.str_list("preload"),
        models_autoload=r.boolean("models_autoload", d.models_autoload),
        ttl=float(r.number("ttl", d.ttl)),
        max_tokens_default=r.number("max_tokens_default", d.max_tokens_default, integer=True),
        drain_timeout=float(r.number("drain_timeout", d.drain_timeout)),
        watch_config=r.boolean("watch_config", d.watch_config),
        watch_folders=r.boolean("watch_folders", d.watch_folders),
        swap_patience=float(r.number("swap_patience", d.swap_patience)),
        kv_persistence=None if r.data.get("kv_persistence") is None else r.boolean("kv_persistence", True),
        slot_save_path=_opt_path(r.string("slot_save_path")),
        slot_save_max_bytes=r.number("slot_save_max_bytes", d.slot_save_max_bytes, integer=True),
        slot_save_timeout=float(r.number("slot_save_timeout", d.slot_save_timeout, minimum=0.1)),
        ui_path=ui_path,
        memory=_parse_memory(r.data.get("memory"), source),
        activity_size=r.number("activity_size", d.activity_size, integer=True, minimum=1),
    )


def _parse_api_keys(data: Any, source: str) -> tuple[str | ApiKey, ...]:
    """Plain keys (every model, the inference role) and scoped ones (a mapping)."""
    if data is None:
        return ()
    if isinstance(data, dict):
        raise ConfigError(source, "router.api_keys", "expected a list of keys (strings or mappings), got a mapping")
    items = data if isinstance(data, list) else [data]
    out: list[str | ApiKey] = []
    for i, item in enumerate(items):
        where = f"router.api_keys[{i}]"
        entry: str | ApiKey
        if isinstance(item, dict):
            entry = _parse_api_key(item, source, where)
        elif isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ConfigError(source, where, f"expected a key (a string) or a mapping with `key` or `key_file`, "
                              f"got {_kind(item)}")
        else:
            entry = expand_env(str(item), source, where)
        secret = entry.key if isinstance(entry, ApiKey) else entry
        if len(secret) < MIN_SECRET_LEN or any(c.isspace() for c in secret):
            raise ConfigError(source, where, f"expected a key of at least {MIN_SECRET_LEN} characters without spaces")
        for j, earlier in enumerate(out):  # one key, two scopes: which one would apply?
            scoped = isinstance(entry, ApiKey) or isinstance(earlier, ApiKey)
            if scoped and (earlier.key if isinstance(earlier, ApiKey) else earlier) == secret:
                raise ConfigError(source, where, f"the same key as router.api_keys[{j}]")
        out.append(entry)
    return tuple(out)


def _parse_api_key(data: dict[str, Any], source: str, where: str) -> ApiKey:
    r = _Reader(data, source, where, _API_KEY_KEYS)
    key, key_file = r.string("key"), _file_path(r.string("key_file"), source)
    if (key is None) == (key_file is None):
        raise r.fail("key", "expected either `key` (the secret, e.g. ${TEAM_KEY}) or `key_file` (a file "
                      "holding it on its first line)")
    if key_file is not None:
        try:
            with open(key_file, encoding="utf-8") as f:
                key = f.readline().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise r.fail("key_file", f"cannot read {key_file}: {getattr(e, 'strerror', None) or e}") from None
    role = r.string("role", "inference", allow_none=False)
    if role not in ROLES:
        raise r.fail("role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    models = r.str_list("models")
    if role == "admin" and models:
        raise r.fail("models", "an admin key sees every model (/admin shows them all); remove `models` or use "
                     "the inference or read role")
    if any(not m.strip() for m in models):
        raise r.fail("models", "expected model names or glob patterns (qwen-*), got an empty one")
    rate = r.string("rate")
    try:
        parsed_rate = Rate.parse(rate) if rate is not None else None
    except ValueError as e:
        raise r.fail("rate", str(e)) from None
    return ApiKey(key=key or "", key_file=key_file, models=models, role=role, rate=parsed_rate,
                  concurrency=r.number("concurrency", 0, integer=True))


def _file_path(value: str | None, source: str) -> str | None:
    """A file named in the catalogue: `~` expanded, relative to the catalogue's folder."""
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute() and not source.startswith("<"):
        path = Path(source).expanduser().parent / path
    return str(path)


def _parse_memory(data: Any, source: str) -> MemorySettings:
    r = _Reader(data, source, "router.memory", _MEMORY_KEYS)
    d = MemorySettings()
    ram = budget_value(r.data.get("ram", d.ram), source, "router.memory.ram")
    gpu_data = r.data.get("gpu", d.gpu)
    gpu: tuple[int | str, ...] | int | str | None
    if isinstance(gpu_data, list):
        gpu = tuple(b for i, v in enumerate(gpu_data)
                    if (b := budget_value(v, source, f"router.memory.gpu[{i}]")) is not None)
    else:
        gpu = budget_value(gpu_data, source, "router.memory.gpu")
    reserve_raw = r.data.get("reserve", d.reserve)
    reserve = parse_size(expand_env(reserve_raw, source, "router.memory.reserve")
                         if isinstance(reserve_raw, str) else reserve_raw)
    if reserve is None:
        raise r.fail("reserve", f"expected a size such as 1GiB, got {reserve_raw!r}")
    unified = r.data.get("unified", d.unified)
    if unified != "auto" and not isinstance(unified, bool):
        raise r.fail("unified", f"expected auto, true or false, got {unified!r}")
    return MemorySettings(ram=ram, gpu=gpu, reserve=reserve, probe=r.boolean("probe", d.probe), unified=unified)


def _opt_path(value: str | None) -> str | None:
    return str(Path(value).expanduser()) if value else None


def _parse_spawn(data: Any, source: str, prefix: str) -> SpawnSpec:
    r = _Reader(data, source, prefix, _SPAWN_KEYS)
    command = r.str_list("command") if "command" in r.data else DEFAULT_COMMAND
    if not command:
        raise r.fail("command", "expected a non-empty list: the program and its arguments")
    health = r.string("health_endpoint", "/health", allow_none=False)
    if not health.startswith("/"):
        raise r.fail("health_endpoint", f"expected a path starting with '/', got {health!r}")
    return SpawnSpec(command=command, health_endpoint=health, args=r.str_list("args"))


def _parse_model(name: Any, data: Any, source: str) -> ModelSpec:
    key = f"models.{name}"
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(source, key, f"expected a model name of {NAME_RULE}")
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
    path = r.string("path")
    if path is None and spawn is None:
        raise r.fail("path", "expected the path of a GGUF file (or a per-model spawn command)")
    state = r.string("state", "manual", allow_none=False)
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
        group=r.string("group"),
        args=r.str_list("args"),
        env=tuple(env),
        spawn=spawn,
        mmproj=r.string("mmproj"),
        state=state,
        ttl=None if ttl is None else float(r.number("ttl", 0)),
        unlisted=r.boolean("unlisted", False),
        allow_args=allow_args,
        pinned=r.boolean("pinned", False),
        concurrency_limit=r.number("concurrency_limit", 0, integer=True),
        max_queue=r.number("max_queue", 0, integer=True),
        display_name=_display_name(r),
        max_tokens_default=None if r.data.get("max_tokens_default") is None
        else r.number("max_tokens_default", 0, integer=True),
    )


def _display_name(r: _Reader) -> str | None:
    shown = r.string("name")
    if shown is not None and not shown.strip():
        raise r.fail("name", "expected the name clients show for this model (the model's own name if "
                     "not set), got an empty one")
    return shown


def _parse_sources(data: Any, source: str) -> SourcesSpec:
    r = _Reader(data, source, "sources", _SOURCES_KEYS)
    dirs = tuple(str(Path(d).expanduser()) for d in r.str_list("dirs"))
    import_dirs = tuple(str(Path(d).expanduser()) for d in r.str_list("import_dirs"))
    return SourcesSpec(dirs=dirs, hf_cache=r.boolean("hf_cache", True), import_dirs=import_dirs)


def _parse_cluster(data: Any, source: str) -> ClusterSettings:
    r = _Reader(data, source, "cluster", _CLUSTER_KEYS)
    d = ClusterSettings()
    placement = r.string("placement", d.placement, allow_none=False)
    if placement not in PLACEMENTS:
        raise r.fail("placement", f"expected one of {', '.join(PLACEMENTS)}, got {placement!r}")
    return ClusterSettings(
        placement=placement,
        replicas=r.number("replicas", d.replicas, integer=True, minimum=1),
        queue_threshold=r.number("queue_threshold", d.queue_threshold, integer=True, minimum=1),
        front_grace=float(r.number("front_grace", d.front_grace, minimum=1)),
        start_wait=float(r.number("start_wait", d.start_wait, minimum=0)),
    )


def parse_config(data: Any, source: str = "<config>") -> Config:
    top = _Reader(data, source, "", _TOP_KEYS)
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
                  sources=_parse_sources(top.data.get("sources"), source),
                  cluster=_parse_cluster(top.data.get("cluster"), source), source=source)


def load_config(path: str | os.PathLike[str]) -> Config:
    source = str(path)
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(source, "<file>", f"cannot read: {e.strerror or e}") from None
    try:
        data = read_yaml(text)
    except YAMLReadError as e:
        raise ConfigError(source, e.where, f"invalid YAML: {e.problem}") from None
    return parse_config(data, source)
