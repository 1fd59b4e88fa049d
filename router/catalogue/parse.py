"""Reading the catalogue file into typed settings (catalogue/config.py).

Longer than 300 lines because every section's validation lives next to the
one typed reader they share, so each error names its key the same way.

Every validation error names the file, the key and what was expected, so a
user can fix a typo without reading code. The keys each section accepts, and
what each takes (its type, allowed values, bounds), are the fields of its
dataclass and their `key()` descriptions (catalogue/keys.py): `_Reader.value`
reads any key from those; a section's reader adds only what lies between its
keys or outside the file (a model's path or spawn, files named in it). YAML
is read with the same YAML 1.2 library that writes the catalogue
(catalogue/yamlio.py), so a model named `no` or `on` stays a name.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from router.catalogue.config import (
    FLAG_RE,
    MIN_SECRET_LEN,
    NAME_RE,
    NAME_RULE,
    RESERVED_FLAGS,
    STOP_PLACEHOLDERS,
    ApiKey,
    ClusterSettings,
    Config,
    ConfigError,
    MemorySettings,
    ModelSpec,
    PeerSpec,
    ProfileSpec,
    Rate,
    RouterSettings,
    SelectorSpec,
    SourcesSpec,
    SpawnSpec,
)
from router.catalogue.keys import Described, file_keys, is_section, keys_of, list_items
from router.catalogue.tls import check_tls
from router.catalogue.values import budget_value, expand_env, parse_size
from router.catalogue.yamlio import YAMLReadError, read_yaml

_ROUTER_KEYS = file_keys(RouterSettings)
_MODEL_KEYS = file_keys(ModelSpec)
_SPAWN_KEYS = file_keys(SpawnSpec)
_SOURCES_KEYS = file_keys(SourcesSpec)
_CLUSTER_KEYS = file_keys(ClusterSettings)
_MEMORY_KEYS = file_keys(MemorySettings)
_API_KEY_KEYS = file_keys(ApiKey)
_PEER_KEYS = file_keys(PeerSpec)
_PROFILE_KEYS = file_keys(ProfileSpec)
_SELECTOR_KEYS = file_keys(SelectorSpec)
_TOP_KEYS = file_keys(Config)


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

    def section(self, cls: type, **own: Callable[[], Any]) -> dict[str, Any]:
        """Every key of cls, by field name: read by `value`, or by the section's `own` reader."""
        return {k.field: own[k.field]() if k.field in own else self.value(k) for k in keys_of(cls)}

    def value(self, k: Described) -> Any:
        """One key, read as its type and checked as its description says (catalogue/config.py)."""
        name, tp, spec = k.name, k.type, k.key
        if k.optional and tp is not str and self.data.get(name, k.default) is None:
            return None
        if spec.kind == "size":
            return self.size(k)
        if spec.kind in ("budget", "budgets"):
            return self.budget(k)
        if spec.choices and tp is not str and list_items(tp) is None:  # auto, true or false: taken as written
            v = self.data.get(name, k.default)
            if not any(v == c and type(v) is type(c) for c in spec.choices):
                raise self.fail(name, f"expected {_expected(k)}, got {v!r}")
            return v
        if tp is str:
            return self.text(k)
        if tp is bool:
            return self.boolean(name, k.default)
        if tp in (int, float):
            n = self.number(name, k.default, integer=tp is int)
            lo, hi = k.bounds
            if n < lo or (hi is not None and n > hi):
                raise self.fail(name, f"expected {_expected(k)}, got {n}")
            return float(n) if tp is float else n
        if list_items(tp) is str:
            items = self.str_list(name) if name in self.data else k.default
            if spec.min_items and len(items) < spec.min_items:
                raise self.fail(name, f"expected {spec.expect or f'at least {spec.min_items} items'}")
            if spec.choices and any(i not in spec.choices for i in items):
                raise self.fail(name, f"expected a list of {', '.join(spec.choices)}, got {list(items)}")
            return items
        if list_items(tp) == tuple[str, str]:
            return self.env(name)
        if tp == tuple[int, int]:
            return self.range(k)
        if spec.kind == "json":
            return self.json_map(name)
        if is_section(tp):  # a mapping of its own keys (a model's capabilities)
            return tp(**_Reader(self.data.get(name), self.source, self.key(name), file_keys(tp)).section(tp))
        if tp is Rate:
            return self.rate(name)
        raise TypeError(f"{self.key(name)}: no reader for {tp}; describe it in catalogue/parse.py")

    def string(self, name: str, default: Any = None, *, allow_none: bool = True) -> Any:
        v = self.data.get(name, default)
        if v is None and allow_none:
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise self.fail(name, f"expected a string, got {_kind(v)}")
        return expand_env(str(v), self.source, self.key(name))

    def text(self, k: Described) -> str | None:
        """A string key: its allowed values, pattern and length (a secret's is never shown)."""
        spec = k.key
        v = self.string(k.name, k.default, allow_none=k.optional)
        if v is None:
            return None
        if spec.min_length is not None and len(v) < spec.min_length:
            what = "a secret" if spec.secret else "a string"
            raise self.fail(k.name, f"expected {spec.expect or f'{what} of at least {spec.min_length} characters'}")
        if (spec.choices and v not in spec.choices) or (spec.pattern and not re.search(spec.pattern, v)):
            raise self.fail(k.name, f"expected {_expected(k)}, got {'an empty one' if not v.strip() else repr(v)}")
        return v

    def number(self, name: str, default: float, *, integer: bool = False) -> Any:
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

    def env(self, name: str) -> tuple[tuple[str, str], ...]:
        """NAME: value pairs (a child's environment)."""
        data = self.data.get(name) or {}
        if not isinstance(data, dict):
            raise self.fail(name, f"expected a mapping of NAME: value, got {_kind(data)}")
        out = []
        for k, v in data.items():
            where = f"{self.key(name)}.{k}"
            if isinstance(v, (dict, list)) or v is None:
                raise ConfigError(self.source, where, f"expected a string, got {_kind(v)}")
            out.append((str(k), expand_env(str(v), self.source, where)))
        return tuple(out)

    def json_map(self, name: str) -> dict[str, Any]:
        """A mapping of any JSON values (a request's parameters, metadata), `${ENV}` read in its strings."""
        data = self.data.get(name) or {}  # every empty YAML value is none, as for `env`
        if not isinstance(data, dict):
            raise self.fail(name, f"expected a mapping, got {_kind(data)}")
        return {str(k): self.json_value(v, f"{self.key(name)}.{k}") for k, v in data.items()}

    def json_value(self, v: Any, where: str) -> Any:
        if isinstance(v, str):
            return expand_env(v, self.source, where)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(self.source, where, f"expected a JSON value, got {v}")
        if isinstance(v, dict):
            return {str(k): self.json_value(x, f"{where}.{k}") for k, x in v.items()}
        if isinstance(v, list):
            return [self.json_value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if v is None or isinstance(v, (bool, int, float)):
            return v
        raise ConfigError(self.source, where, f"expected a JSON value, got {_kind(v)}")

    def range(self, k: Described) -> tuple[int, int]:
        """[first, last] within the key's bounds (written as numbers: no ${ENV} here)."""
        lo, hi = k.bounds
        top = math.inf if hi is None else hi
        v = self.data.get(k.name, list(k.default))
        if (not isinstance(v, list) or len(v) != 2
                or not all(isinstance(p, int) and not isinstance(p, bool) for p in v)
                or not lo <= v[0] <= v[1] <= top):
            raise self.fail(k.name, f"expected [first, last] with {lo} <= first <= last <= {hi}")
        return v[0], v[1]

    def rate(self, name: str) -> Rate | None:
        text = self.string(name)
        try:
            return None if text is None else Rate.parse(text)
        except ValueError as e:
            raise self.fail(name, str(e)) from None

    def size(self, k: Described) -> int:
        raw = self.data.get(k.name, k.default)
        size = parse_size(expand_env(raw, self.source, self.key(k.name)) if isinstance(raw, str) else raw)
        if size is None:
            raise self.fail(k.name, f"expected a size such as 1GiB, got {raw!r}")
        return size

    def budget(self, k: Described) -> tuple[int | str, ...] | int | str | None:
        """A size, auto or off; for "budgets" also a list, one per device (an off one is left out)."""
        raw, where = self.data.get(k.name, k.default), self.key(k.name)
        if isinstance(raw, list) and k.key.kind == "budgets":
            return tuple(b for i, v in enumerate(raw)
                         if (b := budget_value(v, self.source, f"{where}[{i}]")) is not None)
        return budget_value(raw, self.source, where)


def _expected(k: Described) -> str:
    """What a key takes, in an error: its own words, its allowed values or its bounds."""
    if k.key.expect:
        return k.key.expect
    if k.key.choices:
        return f"one of {', '.join(map(str, k.key.choices))}"
    if k.key.pattern:
        return f"text matching {k.key.pattern}"
    lo, hi = k.bounds
    return f"a value >= {lo}" if hi is None else f"a value from {lo} to {hi}"


def _kind(v: Any) -> str:
    if v is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def _parse_router(data: Any, source: str) -> RouterSettings:
    r = _Reader(data, source, "router", _ROUTER_KEYS)
    v = r.section(RouterSettings, api_keys=lambda: _parse_api_keys(r.data.get("api_keys"), source),
                  memory=lambda: MemorySettings(**_Reader(r.data.get("memory"), source, "router.memory",
                                                          _MEMORY_KEYS).section(MemorySettings)))
    v["tls_cert"], v["tls_key"] = _file_path(v["tls_cert"], source), _file_path(v["tls_key"], source)
    check_tls(v["tls_cert"], v["tls_key"], source)
    v["slot_save_path"] = _opt_path(v["slot_save_path"])
    v["log_file"] = _file_path(v["log_file"], source)
    if v["ui_path"] is not None:
        ui_dir = Path(v["ui_path"]).expanduser()
        if not ui_dir.is_absolute() and not source.startswith("<"):
            ui_dir = Path(source).expanduser().parent / ui_dir
        if not (ui_dir / "index.html").is_file():
            raise r.fail("ui_path", f"expected a folder holding a built WebUI (index.html), got {v['ui_path']!r}")
        v["ui_path"] = str(ui_dir.resolve())
    return RouterSettings(**v)


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
    v = r.section(ApiKey, key=lambda: r.string("key"), key_file=lambda: _file_path(r.string("key_file"), source))
    key, key_file = v["key"], v["key_file"]
    if (key is None) == (key_file is None):
        raise r.fail("key", "expected either `key` (the secret, e.g. ${TEAM_KEY}) or `key_file` (a file "
                      "holding it on its first line)")
    if key_file is not None:
        try:
            with open(key_file, encoding="utf-8") as f:
                key = f.readline().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise r.fail("key_file", f"cannot read {key_file}: {getattr(e, 'strerror', None) or e}") from None
    if v["role"] == "admin" and v["models"]:
        raise r.fail("models", "an admin key sees every model (/admin shows them all); remove `models` or use "
                     "the inference or read role")
    if any(not m.strip() for m in v["models"]):
        raise r.fail("models", "expected model names or glob patterns (qwen-*), got an empty one")
    return ApiKey(**{**v, "key": key or ""})


def _file_path(value: str | None, source: str) -> str | None:
    """A file named in the catalogue: `~` expanded, relative to the catalogue's folder."""
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute() and not source.startswith("<"):
        path = Path(source).expanduser().parent / path
    return str(path)


def _opt_path(value: str | None) -> str | None:
    return str(Path(value).expanduser()) if value else None


def _parse_spawn(data: Any, source: str, prefix: str) -> SpawnSpec:
    return SpawnSpec(**_Reader(data, source, prefix, _SPAWN_KEYS).section(SpawnSpec))


def _parse_model(name: Any, data: Any, source: str) -> ModelSpec:
    key = f"models.{name}"
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(source, key, f"expected a model name of {NAME_RULE}")
    r = _Reader(data, source, key, _MODEL_KEYS)
    # `spawn:` with nothing under it is the default command, still this model's own.
    v = r.section(ModelSpec, spawn=lambda: _parse_spawn(r.data["spawn"], source, f"{key}.spawn")
                  if "spawn" in r.data else None, stop_command=lambda: _stop_command(r))
    if v["url"] is not None:
        _check_url(r, "url", v["url"])
        if v["path"] is not None or v["spawn"] is not None:
            raise r.fail("url", "a model served at its url is never started: remove its "
                         f"`{'path' if v['path'] is not None else 'spawn'}`")
    elif v["path"] is None and v["spawn"] is None:
        raise r.fail("path", "expected the path of a GGUF file (or a per-model spawn command, or the url of a "
                     "running server)")
    for a in v["aliases"]:
        if not NAME_RE.match(a):
            raise r.fail("aliases", f"alias {a!r} is not a valid model name")
    _check_rewrites(r, v)
    for i, flag in enumerate(v["allow_args"]):
        if not FLAG_RE.fullmatch(flag) or flag in RESERVED_FLAGS:
            raise ConfigError(source, f"{key}.allow_args[{i}]",
                              f"expected a llama-server flag such as --temp (not one the router sets), got {flag!r}")
    return ModelSpec(name=name, **{**v, "path": str(Path(v["path"]).expanduser()) if v["path"] else None})


def _check_url(r: _Reader, name: str, url: str) -> None:
    """An external server's or a peer's address: http(s), a host, no query (its path is the API's root)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as e:
        raise r.fail(name, f"expected an http:// or https:// URL, got {url!r} ({e})") from None
    if not parts.hostname or parts.query or parts.fragment:
        raise r.fail(name, f"expected an http:// or https:// URL with a host and no query, got {url!r}")


def _stop_command(r: _Reader) -> tuple[str, ...]:
    """A model's stop_command: an argv list, or one string split as a shell would (no shell runs it);
    `${ENV}` is read in each argument, llama-swap's placeholders (STOP_PLACEHOLDERS) are kept for the stop."""
    raw = r.data.get("stop_command")
    if raw is None:
        return ()
    if isinstance(raw, str):
        try:
            items: list[Any] = shlex.split(raw)
        except ValueError as e:
            raise r.fail("stop_command", f"expected a command line, got {raw!r} ({e})") from None
    elif isinstance(raw, list):
        items = raw
    else:
        raise r.fail("stop_command", f"expected a list of strings (or one command line), got {_kind(raw)}")
    out = []
    for i, item in enumerate(items):
        where = f"{r.key('stop_command')}[{i}]"
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ConfigError(r.source, where, f"expected a string, got {_kind(item)}")
        parts = _PLACEHOLDER_RE.split(str(item))  # odd items: the placeholders' names
        out.append("".join(p if j % 2 else expand_env(p, r.source, where) for j, p in enumerate(parts)))
    return tuple(out)


_PLACEHOLDER_RE = re.compile(r"(\$\{(?:" + "|".join(STOP_PLACEHOLDERS) + r")\})")


def _check_rewrites(r: _Reader, v: dict[str, Any]) -> None:
    """A model's request rewriting: the `model` a request names is the router's, never a parameter;
    virtual ids are model names, each with a mapping of parameters."""
    if "model" in v["strip_params"]:
        raise r.fail("strip_params", "`model` names the model to route to; it cannot be removed "
                     "(use_model_name sets what the model's server receives)")
    for where, params in [("set_params", v["set_params"]),
                          *((f"set_params_by_id.{i}", p) for i, p in v["set_params_by_id"].items())]:
        if not isinstance(params, dict):
            raise r.fail(where, f"expected a mapping of request parameters, got {_kind(params)}")
        if {"model", "model?"} & set(params):
            raise r.fail(where, "`model` names the model to route to; use use_model_name for the value the "
                         "model's server receives")
    for vid in v["set_params_by_id"]:
        if not NAME_RE.match(vid):
            raise r.fail("set_params_by_id", f"virtual id {vid!r} is not a valid model name ({NAME_RULE})")


def _parse_sources(data: Any, source: str) -> SourcesSpec:
    v = _Reader(data, source, "sources", _SOURCES_KEYS).section(SourcesSpec)
    return SourcesSpec(**{**v, "dirs": tuple(str(Path(d).expanduser()) for d in v["dirs"]),
                          "import_dirs": tuple(str(Path(d).expanduser()) for d in v["import_dirs"])})


def _parse_cluster(data: Any, source: str) -> ClusterSettings:
    return ClusterSettings(**_Reader(data, source, "cluster", _CLUSTER_KEYS).section(ClusterSettings))
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
        for n in (spec.name, *spec.aliases,
                  *(i for i in spec.set_params_by_id if i != spec.name and i not in spec.aliases)):
            if n in seen:
                raise ConfigError(source, f"models.{name}", f"name or alias {n!r} is already used by {seen[n]!r}")
            seen[n] = spec.name
        models[spec.name] = spec
    _check_fallbacks(models, seen, source)
    selectors = _parse_selectors(top.data.get("selectors"), seen, source)
    peers = _parse_peers(top.data.get("peers"), source)
    profiles = _parse_profiles(top.data.get("profiles"), {*seen, *selectors}, peers, source)
    return Config(router=router, spawn=spawn, models=models, selectors=selectors, profiles=profiles,
                  sources=_parse_sources(top.data.get("sources"), source),
                  cluster=_parse_cluster(top.data.get("cluster"), source), peers=peers, source=source)


def _check_fallbacks(models: dict[str, ModelSpec], names: dict[str, str], source: str) -> None:
    """Each model's `fallbacks` name models of the catalogue (by name or alias: kept as their
    names), never the model itself, and never lead back to it (a cycle would serve nothing)."""
    for name, spec in list(models.items()):
        resolved = []
        for i, f in enumerate(spec.fallbacks):
            target = names.get(f)
            if target is None:
                raise ConfigError(source, f"models.{name}.fallbacks[{i}]", f"{f!r} is not a model of this catalogue")
            if target == name:
                raise ConfigError(source, f"models.{name}.fallbacks[{i}]", f"{f!r} is this model itself")
            resolved.append(target)
        models[name] = replace(spec, fallbacks=tuple(dict.fromkeys(resolved)))
    for name in models:
        path = [name]
        _no_cycle(models, path, source)


def _no_cycle(models: dict[str, ModelSpec], path: list[str], source: str) -> None:
    for f in models[path[-1]].fallbacks:
        if f in path:
            loop = " -> ".join([*path[path.index(f):], f])
            raise ConfigError(source, f"models.{path[0]}.fallbacks", f"fallbacks go round in a cycle: {loop}")
        _no_cycle(models, [*path, f], source)


def _parse_selectors(data: Any, names: dict[str, str], source: str) -> dict[str, SelectorSpec]:
    """llama-swap's rules (internal/config/selectors.go): a strategy, at least one target, each a
    model of this catalogue by name or alias (kept as its name), never a selector; an id that is
    no model's name or alias; a spillover selector's targets each a different model."""
    if not data:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(source, "selectors", f"expected a mapping of id: selector, got {_kind(data)}")
    selectors = {}
    for sid, entry in data.items():
        key = f"selectors.{sid}"
        if not isinstance(sid, str) or not NAME_RE.match(sid):
            raise ConfigError(source, key, f"expected a selector id of {NAME_RULE}")
        if sid in names:
            what = "name" if names[sid] == sid else "alias"
            raise ConfigError(source, key, f"the id is already the {what} of model {names[sid]!r}")
        r = _Reader(entry, source, key, _SELECTOR_KEYS)
        if not r.data.get("strategy"):
            raise r.fail("strategy", "is required: one of warm, pin, spillover")
        v = r.section(SelectorSpec)
        resolved = []
        for i, t in enumerate(v["targets"]):
            if t in data:
                raise ConfigError(source, f"{key}.targets[{i}]", f"{t!r} is a selector; a selector's targets are "
                                  "models (selectors do not chain)")
            if t not in names:
                raise ConfigError(source, f"{key}.targets[{i}]", f"{t!r} is not a model of this catalogue")
            resolved.append(names[t])
        if v["strategy"] == "spillover":
            twice = next((n for i, n in enumerate(resolved) if n in resolved[:i]), None)
            if twice is not None:
                raise r.fail("targets", f"model {twice!r} is named twice (a spillover selector's targets are each "
                             "a different model)")
        selectors[sid] = SelectorSpec(id=sid, **{**v, "targets": tuple(dict.fromkeys(resolved))})
    return selectors


def _parse_profiles(data: Any, names: set[str], peers: dict[str, PeerSpec], source: str) -> dict[str, ProfileSpec]:
    """llama-swap's rules (internal/config/load.go validateProfiles): at least one pin each; a pin's
    target is a model's name, alias or virtual id, a selector or a peer's model, never another pin
    (pins do not chain); null or "" turns the id off (kept as None)."""
    if not data:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(source, "profiles", f"expected a mapping of name: profile, got {_kind(data)}")
    return {name: _parse_profile(name, entry, names, peers, source) for name, entry in data.items()}


def _parse_profile(name: Any, entry: Any, names: set[str], peers: dict[str, PeerSpec], source: str) -> ProfileSpec:
    key = f"profiles.{name}"
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(source, key, f"expected a profile name of {NAME_RULE}")
    if isinstance(entry, list):
        raise ConfigError(source, key, "expected a mapping with `description` and `pins` (llama-swap's older "
                          "list of models is not a profile)")
    r = _Reader(entry, source, key, _PROFILE_KEYS)
    return ProfileSpec(name=name, **r.section(ProfileSpec, pins=lambda: _profile_pins(r, names, peers)))


def _profile_pins(r: _Reader, names: set[str], peers: dict[str, PeerSpec]) -> dict[str, str | None]:
    data = r.data.get("pins")
    if not isinstance(data, dict) or not data:
        got = "an empty one" if isinstance(data, dict) else _kind(data)
        raise r.fail("pins", f"expected a mapping of model id: model (at least one), got {got}")
    pins: dict[str, str | None] = {}
    for pin, target in data.items():
        where = f"{r.key('pins')}.{pin}"
        if not isinstance(pin, str) or not NAME_RE.match(pin):
            raise ConfigError(r.source, where, f"expected a model id of {NAME_RULE}")
        if target is None or target == "":
            pins[pin] = None
            continue
        if isinstance(target, bool) or not isinstance(target, (str, int, float)):
            raise ConfigError(r.source, where, f"expected a model name or null, got {_kind(target)}")
        target = expand_env(str(target), r.source, where)
        if target not in names and not _peer_model(target, peers):
            raise ConfigError(r.source, where, f"{target!r} is not a model, alias, virtual id, selector or peer "
                              "model of this catalogue (pins do not chain)")
        pins[pin] = target
    return pins


def _peer_model(name: str, peers: dict[str, PeerSpec]) -> bool:
    """`PEER/MODEL` of a peer (its `models`, when it names some), or a model a peer names."""
    peer, _, model = name.partition("/")
    if peer in peers and model:
        return not peers[peer].models or any(fnmatchcase(model, p) for p in peers[peer].models)
    return any(fnmatchcase(name, p) for spec in peers.values() for p in spec.models)


def _parse_peers(data: Any, source: str) -> dict[str, PeerSpec]:
    if not data:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(source, "peers", f"expected a mapping of name: peer, got {_kind(data)}")
    peers = {}
    for name, entry in data.items():
        key = f"peers.{name}"
        if not isinstance(name, str) or "/" in name or not NAME_RE.match(name):
            raise ConfigError(source, key, "expected a peer name of letters, digits and . _ : + - (its models "
                              "are named PEER/MODEL)")
        r = _Reader(entry, source, key, _PEER_KEYS)
        v = r.section(PeerSpec)
        _check_url(r, "url", v["url"])
        if any(not m.strip() for m in v["models"]):
            raise r.fail("models", "expected model names or glob patterns (qwen-*), got an empty one")
        if "model" in v["strip_params"]:
            raise r.fail("strip_params", "`model` names the peer's model; it cannot be removed")
        if {"model", "model?"} & set(v["set_params"]):
            raise r.fail("set_params", "`model` names the peer's model; it cannot be set")
        peers[name] = PeerSpec(name=name, **v)
    return peers


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
