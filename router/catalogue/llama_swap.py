"""Migration from llama-swap: its config.yaml written as a llama-router catalogue.

Longer than 300 lines because llama-swap's config has some forty keys, and
each one's decision (carry it, translate it, or say why not) sits next to the
code that makes it, so the report and docs/migration.md stay honest.

llama-swap's loader (internal/config in mostlygeek/llama-swap) is followed
where it defines meaning: macros expand in reverse declaration order (so a
macro may use those declared before it), a model's macros override the
global ones in place, a whole-value macro keeps its type, `${MODEL_ID}` is
the llama-swap model ID, and `cmd` loses its comment lines and backslash
continuations before it is split as a POSIX shell would. `${env.X}` is
written as `${X}`, which llama-router expands when it loads the catalogue,
so secrets stay out of the file.

Decisions; each loss is a report line, `<key>: not carried: <why>` (or
`renamed to`, `changed:`):
- a `cmd` running llama-server with `-m/--model` becomes a plain model: `path`
  is the model file, `--mmproj` becomes `mmproj`, `args` is the rest;
  `--port/--host/--alias` go (the router sets them) and so does `--api-key`
  (the router strips credentials on the way to a child). A llama-server other
  than `llama-server` on PATH becomes `spawn.command` (top level for the most
  common one). Without `-m` (`-hf` models have no local file) a model keeps
  its own `spawn.command`, the rest as `args`.
- any other `cmd` becomes `spawn.command`, `${PORT}` as `$port`; where
  `${PORT}` is part of an argument (docker's `-p ${PORT}:8080`), the command
  runs as `sh -c 'exec ...' sh $port`, the port passed as `$1`, never parsed.
- `proxy` must be the child on this machine: a remote or path-prefixed proxy
  leaves the model out; a fixed loopback port becomes the router's.
- groups: llama-router's are exclusive, and `router.models_max` (one value)
  caps how many models of any group run together, so `swap: true` groups map
  exactly, `swap: false` ones by raising `models_max` unless another group
  needs it lower. `persistent` members become `pinned` members of the one
  group they run beside (its limit raised by their number): pinned models of
  another group would refuse every load outside it. `exclusive: false` is lost.
- model names llama-router refuses (config.NAME_RE) are renamed; the old name
  cannot be an alias, as aliases follow the same rule.
"""

from __future__ import annotations

import io
import re
import shlex
from collections import Counter
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from router.catalogue.config import DEFAULT_COMMAND, MIN_SECRET_LEN, NAME_RE, NAME_RULE, ConfigError
from router.catalogue.importer import CatalogueWriteError, atomic_write
from router.catalogue.parse import load_config
from router.catalogue.yamlio import YAMLReadError, read_yaml, writer_yaml
from router.discovery.naming import safe_name, unique_name

__all__ = ["Conversion", "convert_llama_swap", "import_llama_swap"]

_MACRO_RE = re.compile(r"\$\{([a-zA-Z0-9_-]+)\}")
_ENV_RE = re.compile(r"\$\{env\.([a-zA-Z_][a-zA-Z0-9_]*)\}")
_MACRO_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,63}$")
PORT = "${PORT}"
_ENTRY_KEYS = ("name", "path", "mmproj", "aliases", "group", "args", "env", "spawn", "ttl", "unlisted",
               "concurrency_limit", "pinned")
DEFAULT_PROXY = "http://localhost:${PORT}"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_TOP_SKIPPED = {
    "logLevel": "the log level is a command-line flag: llama-router --log-level debug|info|warning|error",
    "logTimeFormat": "log lines carry the router's own timestamps (--log-format text|json)",
    "logToStdout": "the router logs to stderr, child output prefixed with the model name",
    "logRequests": "the last requests (never their bodies) are kept for GET /api/activity",
    "captureBuffer": "request and response bodies are never kept",
    "store": "activity is kept in memory only (router.activity_size)",
    "ui": "the dashboard (/dashboard) has no such settings",
    "performance": "system statistics are not polled; see GET /metrics",
    "upstream": "there is no /upstream passthrough",
    "profiles": "model IDs are never rewritten at run time",
    "selectors": "there are no virtual model IDs; use aliases",
    "matrix": "no matrix engine: groups and router.models_max decide what runs together",
}
_MODEL_SKIPPED = {
    "cmdStop": "the router stops a child itself: llama-server's exit command, then SIGTERM and "
               "SIGKILL to its process group",
    "useModelName": "requests reach the child unchanged (llama-server ignores the model field)",
    "description": "the catalogue has no description",
    "metadata": "/v1/models describes a model from its GGUF header",
    "capabilities": "/v1/models describes a model from its GGUF header",
    "timeouts": "router.connect_timeout and router.read_timeout apply to every model",
    "compat": "llama-router has no websocket handling",
    "unloadTimeout": "router.stop_timeout applies to every model",
    "sendLoadingState": "router.notify_model_swap applies to every model",
}
# llama-server flags whose values the conversion takes out of the argument list.
_TAKEN = {"-m": "model", "--model": "model", "-mm": "mmproj", "--mmproj": "mmproj", "--port": "port",
          "--host": "host", "-a": "alias", "--alias": "alias", "--api-key": "key", "--api-key-file": "key"}


class _Group(NamedTuple):
    gid: str  # llama-swap's group ID
    swap: bool
    exclusive: bool
    persistent: bool
    names: list[str]  # llama-router names of its members


@dataclass(frozen=True)
class Conversion:
    catalogue: dict[str, Any]  # a llama-router catalogue, ready to dump (plain data)
    report: tuple[str, ...]  # one line per key not (or not exactly) carried over


def convert_llama_swap(data: Any, source: str = "<llama-swap>") -> Conversion:
    """The catalogue equivalent to llama-swap config `data` (parsed YAML); pure.
    ConfigError, naming the key, for input that is not a llama-swap config."""
    return _Converter(source).run(data)


def import_llama_swap(src: str | PathLike[str], dest: str | PathLike[str]) -> Conversion:
    """Convert llama-swap's `src` into the catalogue `dest`. A `dest` that exists
    without models keeps its settings (the import's win); one with models is
    never touched (CatalogueWriteError). The file is checked with load_config
    before it replaces `dest`, so `${X}` references must be set, as for llama-swap."""
    try:
        text = Path(src).expanduser().read_text(encoding="utf-8")
        data = read_yaml(text)
    except OSError as e:
        raise ConfigError(str(src), "<file>", f"cannot read: {e.strerror or e}") from None
    except YAMLReadError as e:
        raise ConfigError(str(src), e.where, f"invalid YAML: {e.problem}") from None
    conv = convert_llama_swap(data, str(src))
    path = Path(dest).expanduser()
    catalogue = dict(_existing(path))
    for key, value in conv.catalogue.items():
        old = catalogue.get(key)
        catalogue[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
    header = [f"llama-router catalogue converted from llama-swap's {src} (see docs/migration.md)."]
    if conv.report:
        header += ["Not carried over as it was:", *(f"  {line}" for line in conv.report)]
    out = "".join("# " + " ".join(line.splitlines()) + "\n" for line in header)
    _write_checked(path, out + _dump(catalogue), secret=bool((catalogue.get("router") or {}).get("api_keys")))
    return Conversion(catalogue, conv.report)


def _existing(path: Path) -> dict[str, Any]:
    try:
        data = read_yaml(path.read_text(encoding="utf-8")) if path.exists() else None
    except (OSError, YAMLReadError) as e:
        raise CatalogueWriteError(path, f"cannot read it, not touching it: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise CatalogueWriteError(path, "top level must be a mapping, not touching it")
    if data and data.get("models"):
        raise CatalogueWriteError(path, "already has models; import into a new file (--config PATH)")
    return data or {}


def _dump(data: dict[str, Any]) -> str:
    y = writer_yaml()
    y.default_flow_style = None  # lists and maps of scalars on one line, as config.example.yaml
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


def _write_checked(path: Path, text: str, *, secret: bool) -> None:
    """Atomic (temp file + rename), and only once the router would load it."""

    def loads(tmp: str) -> None:
        try:
            load_config(tmp)
        except ConfigError as e:
            raise ConfigError(str(path), e.key, str(e).removeprefix(f"{e.source}: {e.key}: ")) from None

    atomic_write(path, text, new_mode=0o600 if secret else 0o644, check=loads)


def _go_str(value: Any) -> str:
    """A scalar as Go's %v prints it, which is how llama-swap puts a macro into a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _expand(value: Any, macros: list[tuple[str, Any]]) -> Any:
    for name, macro in reversed(macros):  # last declared first: earlier ones may be used inside
        value = _subst(value, f"${{{name}}}", macro)
    return value


def _subst(value: Any, slug: str, macro: Any) -> Any:
    if isinstance(value, str):
        return macro if value == slug else value.replace(slug, _go_str(macro))
    if isinstance(value, dict):
        return {k: _subst(v, slug, macro) for k, v in value.items()}
    if isinstance(value, list):
        return [_subst(v, slug, macro) for v in value]
    return value


def _split(cmd: str) -> list[str]:
    """llama-swap's SanitizeCommand: drop comment lines, join `\\` continuations, split."""
    lines = [line for line in cmd.split("\n") if not line.strip().startswith("#")]
    lines = [line.strip()[:-1] + " " if line.strip().endswith("\\") else line for line in lines]
    return shlex.split("\n".join(lines))


def _given(value: Any) -> bool:
    """Worth writing: not a default (None, False, empty); 0 is a value (ttl: 0 = never unload)."""
    return value is not None and value is not False and value not in ([], {})


def _sh_word(token: str) -> str:
    return '"$1"'.join(shlex.quote(part) if part else "" for part in token.split(PORT))


class _Converter:
    def __init__(self, source: str):
        self.source = source
        self.report: list[str] = []
        self.names: dict[str, str] = {}  # llama-swap model ID or alias -> llama-router name
        self.models: dict[str, dict[str, Any]] = {}  # llama-router name -> entry
        self.taken: set[str] = set()  # names and aliases given out

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.source, key, message)

    def skip(self, key: str, why: str) -> None:
        self.report.append(f"{key}: not carried: {why}")

    def want(self, value: Any, kind: type | tuple[type, ...], key: str, what: str) -> Any:
        bool_ok = bool in (kind if isinstance(kind, tuple) else (kind,))
        if (isinstance(value, bool) and not bool_ok) or not isinstance(value, kind):
            raise self.fail(key, f"expected {what}, got {type(value).__name__} {value!r}")
        return value

    def text(self, value: Any, key: str, allow: tuple[str, ...] = ()) -> str:
        """A carried string: every macro resolved, `${env.X}` as llama-router's `${X}`."""
        s = _go_str(self.want(value, (str, int, float), key, "a string"))
        for name in _MACRO_RE.findall(s):
            if name == "PORT" and "PORT" not in allow:
                raise self.fail(key, "${PORT}: the child's port reaches only its command line ($port)")
            if name not in allow:
                raise self.fail(key, f"unknown macro ${{{name}}}")
        return _ENV_RE.sub(r"${\1}", s)

    def macros(self, data: Any, key: str, base: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """`base` with `data`'s macros: same names replaced in place, new ones appended."""
        merged = list(base)
        for name, value in (self.want(data, dict, key, "a mapping") if data is not None else {}).items():
            if not _MACRO_NAME.match(str(name)) or name in ("PID", "PORT", "MODEL_ID"):
                raise self.fail(f"{key}.{name}", "expected a macro name of letters, digits, _ and - "
                                "(at most 63 characters; not PID, PORT or MODEL_ID)")
            self.want(value, (str, int, float, bool), f"{key}.{name}", "a string, number or boolean")
            if isinstance(value, str) and f"${{{name}}}" in value:
                raise self.fail(f"{key}.{name}", "a macro cannot use itself")
            at = [n for n, _ in merged].index(name) if name in dict(merged) else len(merged)
            merged[at:at + 1] = [(name, value)]
        return merged

    def run(self, data: Any) -> Conversion:
        self.want(data, dict, "<top>", "a mapping (a llama-swap config.yaml)")
        models = self.want(data.get("models"), dict, "models", "a mapping of model ID: settings")
        glob = self.macros(data.get("macros"), "macros", [])
        top = {k: v if k in ("models", "macros") else _expand(v, glob) for k, v in data.items()}
        self.name_models([str(m) for m in models])
        for mid, raw in models.items():
            entry = self.model(str(mid), raw, glob)
            if entry is not None:
                self.models[self.names[str(mid)]] = entry
        router = self.settings(top)
        models_max = self.groups(top, [str(m) for m in models])
        if models_max is not None and models_max != 1:
            router["models_max"] = models_max
        out: dict[str, Any] = {"router": router} if router else {}
        llama = Counter(e["program"] for e in self.models.values() if e.get("path"))
        default = llama.most_common(1)[0][0] if llama else "llama-server"
        if default != "llama-server":
            out["spawn"] = {"command": [default, *DEFAULT_COMMAND[1:]]}
        for entry in self.models.values():  # a per-model spawn where it differs from the default
            program, health = entry.pop("program", default), entry.pop("health", "/health")
            if "spawn" in entry or program != default or health != "/health":
                entry["spawn"] = {**(entry.get("spawn") or {"command": [program, *DEFAULT_COMMAND[1:]]}),
                                  **({"health_endpoint": health} if health != "/health" else {})}
        out["models"] = {n: {k: e[k] for k in _ENTRY_KEYS if _given(e.get(k))} for n, e in self.models.items()}
        return Conversion(out, tuple(self.report))

    # ---------------------------------------------------------------- models

    def name_models(self, ids: list[str]) -> None:
        """Names first, so aliases and groups can refer to renamed models."""
        self.taken = taken = {m for m in ids if NAME_RE.match(m)}
        for mid in ids:
            name = mid if NAME_RE.match(mid) else unique_name(safe_name(mid), taken)
            if name != mid:
                self.report.append(f"models.{mid}: renamed to {name}: llama-router names (aliases too) are "
                                   f"{NAME_RULE}, so clients must use the new name")
            taken.add(name)
            self.names[mid] = name

    def model(self, mid: str, raw: Any, glob: list[tuple[str, Any]]) -> dict[str, Any] | None:
        key = f"models.{mid}"
        self.want(raw, dict, key, "a mapping of settings")
        scope = self.macros(raw.get("macros"), f"{key}.macros", [("MODEL_ID", mid), *glob])
        if isinstance(raw.get("cmd"), str):  # comments go first, so a macro in one is never expanded
            raw = {**raw, "cmd": "\n".join(ln for ln in raw["cmd"].split("\n") if not ln.strip().startswith("#"))}
        m = {k: _expand(v, scope) for k, v in raw.items() if k != "macros"}
        cmd = self.want(m.get("cmd"), str, f"{key}.cmd", "the command line as a string")
        try:
            argv = [self.text(t, f"{key}.cmd", allow=("PORT",)) for t in _split(cmd)]
        except ValueError as e:
            raise self.fail(f"{key}.cmd", f"cannot split the command line: {e}") from None
        if not argv:
            raise self.fail(f"{key}.cmd", "expected a command, got an empty one")
        proxy = self.text(m.get("proxy") or DEFAULT_PROXY, f"{key}.proxy", allow=("PORT",))
        if PORT in proxy and not any(PORT in t for t in argv):
            raise self.fail(f"{key}.proxy", "uses ${PORT} but cmd does not")
        url = urlsplit(proxy)
        port = url.netloc.rpartition(":")[2] if ":" in url.netloc.rpartition("]")[2] else "80"
        if url.scheme != "http" or url.hostname not in _LOOPBACK or url.path not in ("", "/") or url.query:
            self.skip(f"{key}.proxy", f"{proxy} is not a child on this machine's loopback at its root; "
                      "the router proxies only to the children it starts, so the model is left out")
            return None
        entry = self.llama_server(key, argv) if Path(argv[0]).name.startswith("llama-server") else None
        if entry is None:
            entry = self.command(key, argv, None if port == PORT else port)
            if entry is None:
                return None
        elif port != PORT:
            self.skip(f"{key}.proxy", f"the router chooses each child's port (llama-server's --port), not {port}")
        entry["aliases"] = self.aliases(key, m.get("aliases") or [], self.names[mid])
        entry["env"] = dict(self.env_pair(f"{key}.env[{i}]", e)
                            for i, e in enumerate(self.want(m.get("env") or [], list, f"{key}.env", "a list")))
        self.model_settings(key, m, entry, mid)
        return entry

    def llama_server(self, key: str, argv: list[str]) -> dict[str, Any] | None:
        """A plain model (or a -hf one with its own command); None when ${PORT} is left in its args."""
        taken: dict[str, str] = {}
        rest: list[str] = []
        it = iter(argv[1:])
        for tok in it:
            flag, eq, value = tok.partition("=") if tok.startswith("--") else (tok, "", "")
            if flag in _TAKEN:
                taken[_TAKEN[flag]] = value if eq else next(it, "")
            else:
                rest.append(tok)
        if any(PORT in t for t in rest):
            return None
        if "key" in taken:
            self.skip(f"{key}.cmd", "--api-key: the router strips credentials on the way to a child, which "
                      "would then refuse every request; use router.api_keys")
        entry: dict[str, Any] = {"path": taken.get("model"), "mmproj": taken.get("mmproj"), "args": rest,
                                 "program": argv[0]}
        if "model" not in taken:  # -hf, --model-url...: no local file to name
            entry["spawn"] = {"command": [argv[0], *DEFAULT_COMMAND[3:]]}
        return entry

    def command(self, key: str, argv: list[str], fixed: str | None) -> dict[str, Any] | None:
        """Any other backend: its command line as spawn.command, the router's port put in."""
        if fixed is not None:
            if fixed not in argv:
                self.skip(f"{key}.proxy", f"port {fixed} is fixed, and cmd has no argument {fixed} to replace "
                          "with the port the router chooses, so the model is left out")
                return None
            self.report.append(f"{key}.cmd: changed: {fixed} became $port, the port the router chooses")
            argv = [PORT if t == fixed else t for t in argv]
        if all(t == PORT or PORT not in t for t in argv):
            return {"spawn": {"command": ["$port" if t == PORT else t for t in argv]}}
        self.report.append(f"{key}.cmd: changed: runs through sh -c, ${{PORT}} passed as $1, because "
                           "llama-router replaces $port only as a whole argument")
        return {"spawn": {"command": ["sh", "-c", "exec " + " ".join(map(_sh_word, argv)), "sh", "$port"]}}

    def aliases(self, key: str, aliases: Any, name: str) -> list[str]:
        out = []
        for i, a in enumerate(self.want(aliases, list, f"{key}.aliases", "a list of names")):
            alias = self.text(a, f"{key}.aliases[{i}]")
            if alias == name:
                continue
            if not NAME_RE.match(alias) or alias in self.taken:
                self.skip(f"{key}.aliases[{i}]", f"{alias!r} is " + ("already a name or alias" if NAME_RE.match(
                    alias) else f"not a valid llama-router name ({NAME_RULE})"))
                continue
            self.taken.add(alias)
            self.names.setdefault(alias, name)
            out.append(alias)
        return out

    def env_pair(self, key: str, item: Any) -> tuple[str, str]:
        name, eq, value = self.text(item, key).partition("=")
        if not eq or not name:
            raise self.fail(key, f"expected NAME=value, got {item!r}")
        return name, value

    def model_settings(self, key: str, m: dict[str, Any], entry: dict[str, Any], mid: str) -> None:
        ttl = m.get("ttl", -1)
        if self.want(ttl, int, f"{key}.ttl", "a whole number of seconds") < -1:
            raise self.fail(f"{key}.ttl", f"expected -1 (the global TTL) or more, got {ttl}")
        entry["ttl"] = ttl if ttl >= 0 else None
        entry["unlisted"] = self.want(m.get("unlisted", False), bool, f"{key}.unlisted", "true or false")
        if m.get("name") is not None and str(m["name"]).strip():  # the name /v1/models shows, as llama-swap's
            entry["name"] = self.text(m["name"], f"{key}.name")
        limit = self.want(m.get("concurrencyLimit", 0), int, f"{key}.concurrencyLimit", "a whole number")
        entry["concurrency_limit"] = limit if limit > 0 else None
        check = self.text(m.get("checkEndpoint", "/health"), f"{key}.checkEndpoint")
        if check.startswith("/"):
            entry["health"] = check
        else:
            self.skip(f"{key}.checkEndpoint", f"{check!r}: the router waits for a path answering 200; /health is used")
        for k, v in m.items():
            if k == "filters" and isinstance(v, dict) and v.get("setParamsByID"):
                by_id = ", ".join(str(i).replace("${MODEL_ID}", mid) for i in v["setParamsByID"])
                self.skip(f"{key}.filters", f"requests reach the child unchanged; the setParamsByID names ({by_id}) "
                          "are not aliases here")
            elif k == "filters":
                self.skip(f"{key}.filters", "requests reach the child unchanged (no parameter stripped or set)")
            elif k in _MODEL_SKIPPED:
                self.skip(f"{key}.{k}", _MODEL_SKIPPED[k])
            elif k not in ("cmd", "proxy", "aliases", "env", "ttl", "unlisted", "concurrencyLimit", "checkEndpoint",
                           "name"):
                self.skip(f"{key}.{k}", "unknown llama-swap key")

    # ---------------------------------------------------------------- router settings

    def settings(self, top: dict[str, Any]) -> dict[str, Any]:
        router: dict[str, Any] = {}
        for key, value in top.items():
            if key in ("models", "macros", "groups", "routing") or value is None:
                continue  # read elsewhere, or nothing said
            numeric = key in ("globalTTL", "healthCheckTimeout", "metricsMaxInMemory", "unloadTimeout", "startPort")
            if numeric and self.want(value, int, key, "a whole number") < 0:
                raise self.fail(key, f"expected a value >= 0, got {value}")
            if key == "globalTTL":
                router["ttl"] = value
            elif key == "healthCheckTimeout":
                router["health_timeout"] = max(value, 15)  # llama-swap's own minimum
            elif key == "unloadTimeout" and value > 0:  # 0 is llama-swap's default, 10 s, as llama-router's
                router["stop_timeout"] = value
            elif key == "metricsMaxInMemory":
                router["activity_size"] = max(value, 1)
            elif key == "startPort" and 1024 <= value <= 65535:  # llama-swap counts up, one port per model
                router["port_range"] = [value, min(value + 999, 65535)]
            elif key == "startPort":
                self.skip(key, f"{value}: children's ports must be 1024-65535; router.port_range keeps its default")
            elif key == "sendLoadingState":
                router["notify_model_swap"] = self.want(value, bool, key, "true or false")
            elif key == "apiKeys":
                router["api_keys"] = self.api_keys(value)
            elif key == "hooks":
                router.update(self.hooks(value))
            elif key == "peers":
                for peer in self.want(value, dict, key, "a mapping of peer ID: settings"):
                    self.skip(f"peers.{peer}", "llama-router serves only the models it starts itself")
            elif key == "includeAliasesInList" and self.want(value, bool, key, "true or false"):
                self.skip(key, "/v1/models lists each model once, its aliases in an `aliases` field")
            elif key != "includeAliasesInList":
                self.skip(key, _TOP_SKIPPED.get(key, "unknown llama-swap key"))
        return router

    def api_keys(self, value: Any) -> list[str]:
        keys = []
        for i, k in enumerate(self.want(value, list, "apiKeys", "a list of keys")):
            key = self.text(k, f"apiKeys[{i}]")
            if not key or " " in key:
                raise self.fail(f"apiKeys[{i}]", "expected a key without spaces")
            if "${" not in key and len(key) < MIN_SECRET_LEN:
                self.skip(f"apiKeys[{i}]", f"llama-router needs keys of at least {MIN_SECRET_LEN} characters")
                continue
            keys.append(key)
        if value and not keys:  # dropping them all would open the router to anyone
            raise self.fail("apiKeys", f"no key has {MIN_SECRET_LEN} characters or more: llama-router would "
                            "serve without authentication; make the keys longer")
        return keys

    def hooks(self, value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for hook, actions in self.want(value, dict, "hooks", "a mapping").items():
            if hook != "on_startup":
                self.skip(f"hooks.{hook}", "unknown llama-swap hook")
                continue
            for action, ids in self.want(actions or {}, dict, "hooks.on_startup", "a mapping").items():
                if action != "preload":
                    self.skip(f"hooks.on_startup.{action}", "unknown llama-swap action")
                    continue
                for i, mid in enumerate(self.want(ids or [], list, "hooks.on_startup.preload", "a list")):
                    key, mid = f"hooks.on_startup.preload[{i}]", self.text(mid, f"hooks.on_startup.preload[{i}]")
                    name = self.names.get(mid.strip())
                    if name is None or name not in self.models:
                        self.skip(key, f"{mid!r} is not a model of the converted catalogue")
                    elif name not in out.setdefault("preload", []):
                        out["preload"].append(name)  # loaded once the port is open, as llama-swap does
        return out

    # ---------------------------------------------------------------- groups

    def group_settings(self, top: dict[str, Any]) -> Any:
        """Top-level `groups` (older llama-swap) or `routing.router.settings.groups`."""
        groups = top.get("groups")
        for key, value in self.want(top.get("routing") or {}, dict, "routing", "a mapping").items():
            if key != "router":
                self.skip(f"routing.{key}", "requests wait first come first served, without priorities"
                          if key == "scheduler" else "unknown llama-swap key")
            elif self.want(value or {}, dict, "routing.router", "a mapping").get("use") == "matrix":
                self.skip("routing.router", _TOP_SKIPPED["matrix"])
            elif groups is None:
                groups = (value.get("settings") or {}).get("groups")
        return self.want(groups or {}, dict, "groups", "a mapping of group ID: settings")

    def groups(self, top: dict[str, Any], ids: list[str]) -> int | None:
        """Set each model's group and pinned; the router.models_max the groups need (None: any)."""
        owner: dict[str, str] = {}
        plans: list[_Group] = []
        for gid, g in self.group_settings(top).items():
            key = f"groups.{gid}"
            self.want(g, dict, key, "a mapping with members")
            swap, exclusive, persistent = (self.want(g.get(k, d), bool, f"{key}.{k}", "true or false")
                                           for k, d in (("swap", True), ("exclusive", True), ("persistent", False)))
            names = []
            for i, mid in enumerate(self.want(g.get("members") or [], list, f"{key}.members", "a list of model IDs")):
                mid = self.text(mid, f"{key}.members[{i}]")
                if mid in owner:
                    raise self.fail(f"{key}.members[{i}]", f"{mid!r} is already a member of group {owner[mid]!r}")
                owner[mid] = str(gid)
                if mid not in ids:
                    self.skip(f"{key}.members[{i}]", f"{mid!r} is not a model ID of this file")
                elif self.names[mid] in self.models:
                    names.append(self.names[mid])
            for k in sorted(set(g) - {"swap", "exclusive", "persistent", "members"}):
                self.skip(f"{key}.{k}", "unknown llama-swap key")
            if names:
                plans.append(_Group(str(gid), swap, exclusive, persistent, names))
        pool = [n for mid, n in self.names.items() if mid in ids and n in self.models and mid not in owner]
        regular = [g for g in plans if not g.persistent] + ([_Group("", True, True, False, pool)] if pool else [])
        persistent = [g for g in plans if g.persistent]
        # Pinned members can join the one group they run beside; pinned anywhere else would block it.
        merge = all(not g.swap or len(g.names) == 1 for g in persistent) and (
            len(regular) == 1 or (not regular and len(persistent) == 1))
        limits: dict[str, list[int]] = {}  # llama-router group ("" = the pool) -> [models together, models]
        for g in regular + persistent:
            host = (regular[0].gid if regular else g.gid) if g.persistent and merge else g.gid
            limit = limits.setdefault(host, [0, 0])
            limit[0] += 1 if g.swap and not (g.persistent and merge) else len(g.names)
            limit[1] += len(g.names)
            for name in g.names:
                self.models[name].update(group=host or None, pinned=g.persistent and merge)
            if g.persistent and not merge:
                self.skip(f"groups.{g.gid}.persistent", "pinned models of one llama-router group would refuse "
                          "every load outside it, and never swap among themselves; its members swap like others")
            if not g.exclusive and not (g.persistent and merge):
                self.skip(f"groups.{g.gid}.exclusive", "llama-router groups are exclusive: loading a model of "
                          "another group stops this group's models")
        needed = min((n for n, size in limits.values() if size > 1), default=None)
        for gid, (n, size) in limits.items():
            if needed is not None and size > 1 and n > needed:
                self.skip(f"groups.{gid}.swap", f"its {n} models run together in llama-swap; "
                          f"router.models_max ({needed}) is one limit for every group")
        return needed
