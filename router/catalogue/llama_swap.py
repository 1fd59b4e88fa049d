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
`renamed to`, `changed:`, `left out:`), and an entry that cannot work (llama-swap's
own loader would refuse it) is left out with its reason while the rest converts:
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
  A fixed loopback `proxy` port becomes the model's `port`.
- a `proxy` that is not this machine's loopback becomes `url`: a server the
  router never starts, so its `cmd`, `env`, `ttl`... are reported.
- filters become `strip_params`, `set_params`, `set_params_by_id` (virtual ids);
  `useModelName`, `description`, `metadata`, `capabilities`, `timeouts`
  (connect, responseHeader as read), `unloadTimeout`, `sendLoadingState`,
  `cmdStop`, `checkEndpoint`, `captureBuffer`, `peers` (with their `filters`
  and `timeouts`) and the log settings have keys of the same meaning.
- groups: llama-router's are exclusive, and `router.models_max` (one value)
  caps how many models of any group run together, so `swap: true` groups map
  exactly, `swap: false` ones by raising `models_max` unless another group
  needs it lower. Groups that do not stop the others (`exclusive: false`) and
  `persistent` ones join the one group they run beside (its limit raised by
  their number), persistent members `pinned`: pinned models of another group
  would refuse every load outside it. Beside several groups, that is lost.
- the matrix engine is replaced by memory placement.
- `profiles` keep their names, descriptions and pins (a pin's target renamed
  with its model; a pin to a model left out is reported and dropped; null or
  "" still turns the id off). llama-swap's older list syntax is reported.
- `selectors` keep their ids, strategies and targets (`settings.spillover` is
  `spillover`); a target that is a peer's model is left out (a selector's targets
  are models of the catalogue). `routing.scheduler.settings.fifo.priority` is each
  model's `priority`; a `hooks.on_startup.preload` entry naming a selector
  preloads its first target.
- model names llama-router refuses (config.NAME_RE) are renamed; the old name
  cannot be an alias, as aliases follow the same rule.
"""

from __future__ import annotations

import io
import os
import re
import shlex
from collections import Counter
from dataclasses import dataclass
from fnmatch import fnmatchcase
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from router.catalogue.config import DEFAULT_COMMAND, MIN_SECRET_LEN, MODALITIES, NAME_RE, NAME_RULE, ConfigError
from router.catalogue.importer import CatalogueWriteError, atomic_write
from router.catalogue.parse import parse_config
from router.catalogue.yamlio import YAMLReadError, read_yaml, writer_yaml
from router.discovery.naming import safe_name, unique_name

__all__ = ["Conversion", "convert_llama_swap", "import_llama_swap"]

_MACRO_RE = re.compile(r"\$\{([a-zA-Z0-9_-]+)\}")
_ENV_RE = re.compile(r"\$\{env\.([a-zA-Z_][a-zA-Z0-9_]*)\}")
_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # a written ${X}: the environment's, at load
_MACRO_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,63}$")
PORT = "${PORT}"
_ENTRY_KEYS = ("name", "description", "path", "url", "port", "mmproj", "aliases", "group", "args", "env", "spawn",
               "health_endpoint", "stop_command", "ttl", "unlisted", "concurrency_limit", "pinned", "use_model_name",
               "strip_params", "set_params", "set_params_by_id", "metadata", "capabilities", "timeouts",
               "stop_timeout", "swap_progress", "priority")
DEFAULT_PROXY = "http://localhost:${PORT}"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
MEMORY_PLACEMENT = (
    "replaced by memory placement: which models run together follows each one's memory figure against the "
    "RAM/GPU budgets (router.memory, docs/memory.md), its group and router.models_max, and evictions take idle, "
    "least recently used models first, so sets, vars and evict_costs have no equivalent")
_TOP_SKIPPED = {
    "logTimeFormat": "log lines carry the router's own time stamps (text: HH:MM:SS; router.log_format json: "
                     "ISO 8601, UTC)",
    "logToStdout": "the router's log (stderr, or router.log_file) holds its own lines and every model server's "
                   "output, prefixed with the model's name; one model's output alone is at GET /logs/<model>",
    "logRequests": "the last requests (never their bodies) are kept for GET /api/activity",
    "store": "activity is kept in memory only (router.activity_size)",
    "ui": "the dashboard's activity list (/dashboard) shows no session IDs",
    "performance": "system statistics are not polled; GET /metrics has the router's and each model server's own",
    "upstream": "/upstream/<model>/... always loads its model; no path is exempt (ignorePaths)",
    "matrix": MEMORY_PLACEMENT,
}
_COMPAT = "llama-router relays no websocket (the Upgrade header never reaches a model's server), so none can load " \
          "a model or count toward its requests"
_TIMEOUTS_SKIPPED = {
    "keepalive": "the router's connections to a model's server are its own (a fresh one per generation; light "
                 "requests reuse a few, closed after 2 s idle), without TCP keep-alive probes",
    "tlsHandshake": "no separate TLS handshake limit (the servers the router starts speak plain HTTP on the "
                    "loopback); timeouts.connect bounds connecting",
    "idleConn": "idle connections to a model's server are closed after 2 s by the router's pool",
    "expectContinue": "the router sends each request whole, without Expect: 100-continue",
}
# The same for a peer, whose connections go through the same pool (TLS included).
_PEER_TIMEOUTS_SKIPPED = {
    "keepalive": "the router's connections to a peer are its own (a fresh one per generation; light requests "
                 "reuse a few, closed after 2 s idle), without TCP keep-alive probes",
    "tlsHandshake": "no separate TLS handshake limit: the handshake is part of connecting, which "
                    "timeouts.connect bounds",
    "idleConn": "idle connections to a peer are closed after 2 s by the router's pool",
    "expectContinue": "the router sends each request whole, without Expect: 100-continue",
}
# Keys of a model that describe a process the router starts: a `url` model has none.
_PROCESS_KEYS = {"env": "env", "ttl": "ttl", "cmdStop": "stop_command", "unloadTimeout": "stop_timeout",
                 "concurrencyLimit": "concurrency_limit"}
# llama-server flags whose values the conversion takes out of the argument list.
_TAKEN = {"-m": "model", "--model": "model", "-mm": "mmproj", "--mmproj": "mmproj", "--port": "port",
          "--host": "host", "-a": "alias", "--alias": "alias", "--api-key": "key", "--api-key-file": "key"}
_LOG_LEVELS = {"debug": "debug", "info": "info", "warn": "warning", "error": "error"}


class _Group(NamedTuple):
    gid: str  # llama-swap's group ID
    swap: bool
    exclusive: bool
    persistent: bool
    names: list[str]  # llama-router names of its members

    @property
    def joins(self) -> bool:
        """Runs beside the others rather than instead of them."""
        return self.persistent or not self.exclusive


@dataclass(frozen=True)
class Conversion:
    catalogue: dict[str, Any]  # a llama-router catalogue, ready to dump (plain data)
    report: tuple[str, ...]  # one line per key not (or not exactly) carried over
    warnings: tuple[str, ...] = ()  # `${X}` references not set now: the router needs them when it starts


def convert_llama_swap(data: Any, source: str = "<llama-swap>") -> Conversion:
    """The catalogue equivalent to llama-swap config `data` (parsed YAML); pure.
    ConfigError, naming the key, for input that is not a llama-swap config."""
    return _Converter(source).run(data)


def import_llama_swap(src: str | PathLike[str], dest: str | PathLike[str]) -> Conversion:
    """Convert llama-swap's `src` into the catalogue `dest`. A `dest` that exists
    without models keeps its settings (the import's win); one with models is
    never touched (CatalogueWriteError). The file is checked as the router reads it
    before it replaces `dest`; a `${X}` the environment lacks now is a warning (the
    router needs it when it starts), never written out as a value."""
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
    warnings = tuple(f"{key}: ${{{var}}} is not set now; the router reads it when it starts"
                     for key, var in _references(catalogue) if var not in os.environ)
    header = [f"llama-router catalogue converted from llama-swap's {src} (see docs/migration.md)."]
    if conv.report:
        header += ["Not carried over as it was:", *(f"  {line}" for line in conv.report)]
    out = "".join("# " + " ".join(line.splitlines()) + "\n" for line in header)
    _write_checked(path, out + _dump(catalogue), secret=_holds_secrets(catalogue))
    return Conversion(catalogue, conv.report, warnings)


def _references(value: Any, key: str = "") -> list[tuple[str, str]]:
    """(dotted key, X) of every `${X}` in a catalogue's values."""
    if isinstance(value, str):
        return [(key, var) for var in _REF_RE.findall(value)]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [ref for k, v in items
            for ref in _references(v, f"{key}[{k}]" if isinstance(k, int) else f"{key}.{k}" if key else str(k))]


def _holds_secrets(catalogue: dict[str, Any]) -> bool:
    models = catalogue.get("models") or {}
    return bool((catalogue.get("router") or {}).get("api_keys")
                or any(isinstance(p, dict) and p.get("api_key") for p in (catalogue.get("peers") or {}).values())
                or any(isinstance(m, dict) and m.get("api_key") for m in models.values()))


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
    """Atomic (temp file + rename), and only once the router would load it, with a stand-in
    for each `${X}` the environment lacks now (it is checked again when the router starts)."""

    def loads(tmp: str) -> None:
        try:
            parse_config(_stand_ins(read_yaml(Path(tmp).read_text(encoding="utf-8"))), str(path))
        except ConfigError as e:
            raise ConfigError(str(path), e.key, str(e).removeprefix(f"{e.source}: {e.key}: ")) from None

    atomic_write(path, text, new_mode=0o600 if secret else 0o644, check=loads)


def _stand_ins(value: Any) -> Any:
    if isinstance(value, str):
        return _REF_RE.sub(lambda m: m[0] if m[1] in os.environ else f"unset-{m[1]}-value", value)
    if isinstance(value, dict):
        return {k: _stand_ins(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stand_ins(v) for v in value]
    return value


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
        self.taken: set[str] = set()  # names, aliases and virtual ids given out
        self.selectors: set[str] = set()  # llama-swap's virtual model IDs (#27)

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
                raise self.fail(key, "${PORT}: the port of the model's own server, which the router chooses at "
                                "each load and keeps behind its own port")
            if name not in allow:
                raise self.fail(key, f"unknown macro ${{{name}}}")
        return _ENV_RE.sub(r"${\1}", s)

    def json(self, value: Any, key: str) -> Any:
        """A carried value of any type (setParams, metadata): its strings as `text`."""
        if isinstance(value, dict):
            return {str(k): self.json(v, f"{key}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.json(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return self.text(value, key) if isinstance(value, str) else value

    def json_map(self, value: Any, key: str, protected: tuple[str, ...] = ()) -> dict[str, Any]:
        """A mapping whose entries are carried one by one: one that cannot be is reported alone."""
        out = {}
        for k, v in self.want(value or {}, dict, key, "a mapping").items():
            if str(k) in protected:
                self.skip(f"{key}.{k}", "`model` names the model to route to (use_model_name sets what the "
                          "model's server receives); llama-swap never sets it either")
                continue
            try:
                out[str(k)] = self.json(v, f"{key}.{k}")
            except ConfigError as e:
                self.skip(e.key, str(e).removeprefix(f"{e.source}: {e.key}: "))
        return out

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
        self.selectors = {str(s) for s in (top.get("selectors") or {})} if isinstance(top.get("selectors"), dict) \
            else set()
        raw = top.get("selectors")
        self.raw_selectors: dict[Any, Any] = raw if isinstance(raw, dict) else {}
        self.name_models([str(m) for m in models])
        for mid, raw in models.items():
            try:
                entry = self.model(str(mid), raw, glob)
            except ConfigError as e:  # one entry that cannot work: the rest still converts
                where = e.key.removeprefix(f"models.{mid}").lstrip(".")
                self.report.append(f"models.{mid}: left out: {f'{where}: ' if where else ''}"
                                   f"{str(e).removeprefix(f'{e.source}: {e.key}: ')}")
                continue
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
        for entry in self.models.values():  # a per-model spawn where the program differs from the default
            program = entry.pop("program", default)
            if "spawn" in entry or program != default:
                spawn = entry.setdefault("spawn", {"command": [program, *DEFAULT_COMMAND[1:]]})
                if spawn["command"][0] == "llama-server" and program != "llama-server":
                    spawn["command"][0] = program
        peers = self.peers(top.get("peers"))
        if peers:
            out["peers"] = peers
        out["models"] = {name: {k: entry[k] for k in _ENTRY_KEYS
                                if _given(entry.get(k)) or (k == "swap_progress" and entry.get(k) is False)}
                         for name, entry in self.models.items()}
        selectors = self.selector_entries(top.get("selectors"))
        if selectors:
            out["selectors"] = selectors
        profiles = self.profile_entries(top.get("profiles"), out)
        if profiles:
            out["profiles"] = profiles
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
        filters = self.want(m.get("filters") or {}, dict, f"{key}.filters", "a mapping")
        if isinstance(filters.get("setParamsByID"), dict):  # its keys are macros' too
            m["filters"] = {**filters, "setParamsByID": {_expand(str(k), scope): v
                                                         for k, v in filters["setParamsByID"].items()}}
        cmd = self.want(m.get("cmd"), str, f"{key}.cmd", "the command line as a string")
        try:
            words = _split(cmd)
        except ValueError as e:
            raise self.fail(f"{key}.cmd", f"cannot split the command line: {e}") from None
        argv = [self.text(t, f"{key}.cmd", allow=("PORT",)) for t in words]
        if not argv:
            raise self.fail(f"{key}.cmd", "expected a command, got an empty one")
        proxy = self.text(m.get("proxy") or DEFAULT_PROXY, f"{key}.proxy", allow=("PORT",))
        if PORT in proxy and not any(PORT in t for t in argv):
            raise self.fail(f"{key}.proxy", f"{proxy} uses ${{PORT}} but cmd does not, so no server would listen "
                            "there (llama-swap refuses this entry too)")
        url = urlsplit(proxy)
        port = url.netloc.rpartition(":")[2] if ":" in url.netloc.rpartition("]")[2] else "80"
        if url.scheme not in ("http", "https") or not url.hostname or url.query:
            raise self.fail(f"{key}.proxy", f"expected an http:// URL, got {proxy!r}")
        remote = url.scheme != "http" or url.hostname not in _LOOPBACK or url.path not in ("", "/")
        if remote and PORT in proxy:
            raise self.fail(f"{key}.proxy", f"{proxy}: ${{PORT}} is the port of the server cmd starts here, which "
                            "the router reaches at the root of its loopback port only")
        local = None if remote or not Path(argv[0]).name.startswith("llama-server") else self.llama_server(key, argv)
        if remote:
            entry = self.external(key, proxy, cmd)
        elif local is not None:
            entry = local
            if port != PORT:
                self.skip(f"{key}.proxy", f"the router starts llama-server on a port it chooses (--port) and "
                          f"sends requests there, not to {port}")
        else:
            entry = self.command(key, argv, None if port == PORT else port)
        entry["aliases"] = self.aliases(key, m.get("aliases") or [], self.names[mid])
        entry["env"] = dict(self.env_pair(f"{key}.env[{i}]", e)
                            for i, e in enumerate(self.want(m.get("env") or [], list, f"{key}.env", "a list")))
        self.model_settings(key, m, entry)
        self.filters(key, m, entry, mid)
        if entry.get("url"):
            for k, ours in _PROCESS_KEYS.items():
                if _given(entry.pop(ours, None)):
                    self.skip(f"{key}.{k}", "the router never starts or stops a model served at its url")
        return entry

    def external(self, key: str, proxy: str, cmd: str) -> dict[str, Any]:
        """A model served elsewhere: the router relays to its url and never runs its cmd."""
        self.skip(f"{key}.cmd", f"the model is served at {proxy} (its url), which the router never starts: run "
                  f"`{' '.join(cmd.split())}` yourself")
        return {"url": proxy}

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

    def command(self, key: str, argv: list[str], fixed: str | None) -> dict[str, Any]:
        """Any other backend: its command line as spawn.command, the router's port put in; a
        fixed port (the proxy's) is the model's `port`, where the router talks to it."""
        entry: dict[str, Any] = {}
        if fixed is not None:
            entry["port"] = int(fixed)
            if any(PORT in t for t in argv):
                self.report.append(f"{key}.cmd: changed: ${{PORT}} is the model's fixed port {fixed}, where the "
                                   "proxy sends requests")
        if all(t == PORT or PORT not in t for t in argv):
            return {**entry, "spawn": {"command": ["$port" if t == PORT else t for t in argv]}}
        self.report.append(f"{key}.cmd: changed: runs through sh -c, ${{PORT}} passed as $1, because "
                           "llama-router replaces $port only as a whole argument")
        return {**entry, "spawn": {"command": ["sh", "-c", "exec " + " ".join(map(_sh_word, argv)), "sh", "$port"]}}

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

    def model_settings(self, key: str, m: dict[str, Any], entry: dict[str, Any]) -> None:
        ttl = m.get("ttl", -1)
        if self.want(ttl, int, f"{key}.ttl", "a whole number of seconds") < -1:
            raise self.fail(f"{key}.ttl", f"expected -1 (the global TTL) or more, got {ttl}")
        entry["ttl"] = ttl if ttl >= 0 else None
        entry["unlisted"] = self.want(m.get("unlisted", False), bool, f"{key}.unlisted", "true or false")
        for k, ours in (("name", "name"), ("description", "description"), ("useModelName", "use_model_name")):
            if m.get(k) is not None and str(m[k]).strip():  # an empty one is none, as llama-swap's
                entry[ours] = self.text(m[k], f"{key}.{k}").strip()
        limit = self.want(m.get("concurrencyLimit", 0), int, f"{key}.concurrencyLimit", "a whole number")
        entry["concurrency_limit"] = limit if limit > 0 else None
        unload = self.want(m.get("unloadTimeout", 0), int, f"{key}.unloadTimeout", "a whole number of seconds")
        if unload < 0:
            raise self.fail(f"{key}.unloadTimeout", f"expected 0 (the global unloadTimeout) or more, got {unload}")
        entry["stop_timeout"] = unload or None
        if m.get("sendLoadingState") is not None:
            entry["swap_progress"] = self.want(m["sendLoadingState"], bool, f"{key}.sendLoadingState",
                                               "true or false")
        check = self.text(m.get("checkEndpoint", "/health"), f"{key}.checkEndpoint")
        if check.startswith("/"):
            entry["health_endpoint"] = check if check != "/health" or entry.get("url") else None
        else:
            self.skip(f"{key}.checkEndpoint", f"{check!r}: the router waits for a path answering 200; /health is used")
        if m.get("cmdStop") is not None and str(m["cmdStop"]).strip():
            entry["stop_command"] = self.stop_command(f"{key}.cmdStop", m["cmdStop"])
        entry["metadata"] = self.metadata(f"{key}.metadata", m.get("metadata"))
        entry["capabilities"] = self.capabilities(f"{key}.capabilities", m.get("capabilities"))
        entry["timeouts"] = self.timeouts(f"{key}.timeouts", m.get("timeouts"))
        if m.get("compat") is not None:
            self.skip(f"{key}.compat", _COMPAT)
        known = {"cmd", "proxy", "aliases", "env", "ttl", "unlisted", "concurrencyLimit", "checkEndpoint", "name",
                 "description", "useModelName", "unloadTimeout", "sendLoadingState", "cmdStop", "metadata",
                 "capabilities", "timeouts", "compat", "filters"}
        for k in m:
            if k not in known:
                self.skip(f"{key}.{k}", "unknown llama-swap key")

    def stop_command(self, key: str, cmd: Any) -> list[str]:
        """cmdStop as an argv; `${PID}` and `${PORT}` stay for the router to replace."""
        try:
            words = _split(self.want(cmd, str, key, "a string"))
        except ValueError as e:
            raise self.fail(key, f"cannot split the command line: {e}") from None
        return [self.text(t, key, allow=("PID", "PORT")) for t in words]

    def metadata(self, key: str, value: Any) -> dict[str, Any]:
        return self.json_map(value, key)

    def capabilities(self, key: str, value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.want(value or {}, dict, key, "a mapping").items():
            if k in ("in", "out"):
                items = [self.text(x, f"{key}.{k}[{i}]")
                         for i, x in enumerate(self.want(v or [], list, f"{key}.{k}", "a list"))]
                bad = [x for x in items if x not in MODALITIES]
                if bad:  # llama-swap's loader refuses the whole config
                    raise self.fail(f"{key}.{k}", f"invalid modality {bad[0]!r}, must be one of text, audio, image")
                out[k] = items
            elif k in ("tools", "reranker"):
                out[k] = self.want(v, bool, f"{key}.{k}", "true or false")
            elif k == "context":
                if self.want(v, int, f"{key}.{k}", "a whole number of tokens") < 0:
                    raise self.fail(f"{key}.{k}", f"expected a value >= 0, got {v}")
                out[k] = v
            else:
                self.skip(f"{key}.{k}", "unknown llama-swap key")
        return {k: v for k, v in out.items() if _given(v) and v != 0}

    def timeouts(self, key: str, value: Any, skipped: dict[str, str] = _TIMEOUTS_SKIPPED) -> dict[str, Any]:
        """A model's or a peer's: connect, and responseHeader as read; `skipped`: the keys that have no
        meaning here, with why."""
        out = {}
        for k, v in self.want(value or {}, dict, key, "a mapping").items():
            if k in skipped:
                self.skip(f"{key}.{k}", skipped[k])
                continue
            if k not in ("connect", "responseHeader"):
                self.skip(f"{key}.{k}", "unknown llama-swap key")
                continue
            seconds = self.want(v, int, f"{key}.{k}", "a whole number of seconds")
            ours = "connect" if k == "connect" else "read"
            if seconds > 0:
                out[ours] = seconds
            else:  # 0: no limit in llama-swap
                self.skip(f"{key}.{k}", f"{seconds} (no limit): the router always bounds it; "
                          f"router.{ours}_timeout applies")
        return out

    def filters(self, key: str, m: dict[str, Any], entry: dict[str, Any], mid: str) -> None:
        """llama-swap's filters: stripParams (a comma-separated string), setParams, setParamsByID."""
        filters = self.want(m.get("filters") or {}, dict, f"{key}.filters", "a mapping")
        for k, v in filters.items():
            where = f"{key}.filters.{k}"
            if k in ("stripParams", "strip_params"):  # the second is llama-swap's older name
                strip = self.text(v or "", where)
                entry["strip_params"] = sorted({p.strip() for p in strip.split(",") if p.strip()} - {"model"})
            elif k == "setParams":
                entry["set_params"] = self.json_map(v, where, protected=("model",))
            elif k == "setParamsByID":
                entry["set_params_by_id"] = self.by_id(where, v, mid)
            else:
                self.skip(where, "unknown llama-swap key")

    def peer_filters(self, key: str, value: Any, entry: dict[str, Any]) -> None:
        """A peer's filters: stripParams and setParams, as a model's."""
        for k, v in self.want(value or {}, dict, key, "a mapping").items():
            where = f"{key}.{k}"
            if k == "stripParams":
                strip = sorted({p.strip() for p in self.text(v or "", where).split(",") if p.strip()} - {"model"})
                if strip:
                    entry["strip_params"] = strip
            elif k == "setParams":
                params = self.json_map(v, where, protected=("model",))
                if params:
                    entry["set_params"] = params
            elif k == "setParamsByID":
                self.skip(where, "virtual ids are the catalogue's models' (set_params_by_id); a peer's "
                          "set_params apply to every model of the peer")
            else:
                self.skip(where, "unknown llama-swap key")

    def by_id(self, key: str, value: Any, mid: str) -> dict[str, Any]:
        """Virtual ids: each a name of its own (llama-swap makes them aliases), with its parameters."""
        out = {}
        name = self.names[mid]
        for vid, params in self.want(value or {}, dict, key, "a mapping of model ID: parameters").items():
            vid = name if vid == mid else self.text(vid, key)
            if vid != name and (not NAME_RE.match(vid) or vid in self.taken):
                self.skip(f"{key}.{vid}", f"{vid!r} is " + ("already a name or alias" if NAME_RE.match(vid)
                                                             else f"not a valid llama-router name ({NAME_RULE})"))
                continue
            self.want(params, dict, f"{key}.{vid}", "a mapping of parameters")
            self.taken.add(vid)
            self.names.setdefault(vid, name)
            out[vid] = self.json_map(params, f"{key}.{vid}", protected=("model",))
        return out

    # ---------------------------------------------------------------- router settings

    def settings(self, top: dict[str, Any]) -> dict[str, Any]:
        router: dict[str, Any] = {}
        for key, value in top.items():
            if key in ("models", "macros", "groups", "routing", "peers", "selectors", "profiles") or value is None:
                continue  # read elsewhere, or nothing said
            numeric = key in ("globalTTL", "healthCheckTimeout", "metricsMaxInMemory", "unloadTimeout", "startPort",
                              "captureBuffer")
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
            elif key == "captureBuffer":
                router["capture_bytes"] = f"{value}MiB" if value else 0  # llama-swap's MB are MiB
            elif key == "logLevel":
                level = self.text(value, key).lower()
                if level not in _LOG_LEVELS:
                    raise self.fail(key, f"expected debug, info, warn or error, got {value!r}")
                router["log_level"] = _LOG_LEVELS[level]
            elif key == "apiKeys":
                router["api_keys"] = self.api_keys(value)
            elif key == "hooks":
                router.update(self.hooks(value))
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
                    if name is None and mid.strip() in self.selectors:
                        name = self.selector_first(mid.strip())
                        if name is None:
                            self.skip(key, f"{mid!r} is a selector none of whose targets is a model of the "
                                      "converted catalogue")
                            continue
                        self.skip(key, f"{mid!r} is a selector: its first target, {name!r}, is preloaded")
                    if name is None or name not in self.models:
                        self.skip(key, f"{mid!r} is not a model of the converted catalogue")
                    elif self.models[name].get("url"):
                        self.skip(key, f"{mid!r} is served at its url, which the router never starts")
                    elif name not in out.setdefault("preload", []):
                        out["preload"].append(name)  # loaded once the port is open, as llama-swap does
        return out

    def selector_entries(self, value: Any) -> dict[str, Any]:
        """llama-swap's `selectors`: id, strategy, targets (models of the converted catalogue, by
        their names), `settings.spillover` as `spillover`, name, description, unlisted, metadata."""
        out: dict[str, Any] = {}
        for sid, raw in self.want(value or {}, dict, "selectors", "a mapping of selector ID: settings").items():
            key, sid = f"selectors.{sid}", str(sid)
            self.want(raw, dict, key, "a mapping with strategy and targets")
            if not NAME_RE.match(sid) or sid in self.taken:
                self.skip(key, f"{sid!r} is " + ("already a model's name or alias" if NAME_RE.match(sid)
                                                 else f"not a valid llama-router name ({NAME_RULE})"))
                continue
            entry: dict[str, Any] = {}
            for k, v in raw.items():
                if k in ("strategy", "name", "description"):
                    entry[k] = self.text(v, f"{key}.{k}")
                elif k == "targets":
                    entry["targets"] = self.selector_targets(key, v)
                elif k == "settings":
                    for sk, sv in self.want(v or {}, dict, f"{key}.settings", "a mapping").items():
                        if sk == "spillover":
                            entry["spillover"] = self.want(sv, int, f"{key}.settings.spillover", "a whole number")
                        else:
                            self.skip(f"{key}.settings.{sk}", "unknown llama-swap key")
                elif k == "unlisted":
                    entry["unlisted"] = self.want(v, bool, f"{key}.unlisted", "true or false")
                elif k == "metadata":
                    entry["metadata"] = self.metadata(f"{key}.metadata", v)
                else:
                    self.skip(f"{key}.{k}", "unknown llama-swap key")
            if not entry.get("targets"):
                self.skip(key, "left out: none of its targets is a model of the converted catalogue")
                continue
            out[sid] = {k: v for k, v in entry.items() if _given(v) or k == "unlisted"}
        return out

    def selector_targets(self, key: str, value: Any) -> list[str]:
        targets = []
        for i, t in enumerate(self.want(value or [], list, f"{key}.targets", "a list of model IDs")):
            target = self.text(t, f"{key}.targets[{i}]")
            name = self.names.get(target.strip())
            if name is not None and name in self.models:
                if name not in targets:
                    targets.append(name)
            elif target.strip() in self.selectors:
                raise self.fail(f"{key}.targets[{i}]", f"{target!r} is a selector; selectors do not chain")
            else:
                self.skip(f"{key}.targets[{i}]", f"{target!r} is " + (
                    "a peer's model; a selector's targets are models of this catalogue" if "/" in target
                    else "not a model of the converted catalogue"))
        return targets

    def selector_first(self, sid: str) -> str | None:
        """The model a selector's first usable target became (a preload of the selector loads it)."""
        raw = self.raw_selectors.get(sid)
        targets = raw.get("targets") if isinstance(raw, dict) else None
        for t in targets if isinstance(targets, list) else []:
            name = self.names.get(str(t).strip())
            if name is not None and name in self.models:
                return name
        return None

    def profile_entries(self, value: Any, out: dict[str, Any]) -> dict[str, Any]:
        """llama-swap's `profiles`: name, description and pins, each pin's target a model (renamed
        with it), alias, virtual id, selector or peer model of the converted catalogue, or null."""
        profiles: dict[str, Any] = {}
        for pid, raw in self.want(value or {}, dict, "profiles", "a mapping of profile name: settings").items():
            key, pid = f"profiles.{pid}", str(pid)
            if not NAME_RE.match(pid):
                self.skip(key, f"{pid!r} is not a valid llama-router name ({NAME_RULE})")
                continue
            if not isinstance(raw, dict):
                self.skip(key, "left out: not a mapping with description and pins (llama-swap's older list syntax, "
                          "which llama-swap refuses too)")
                continue
            entry: dict[str, Any] = {}
            for k, v in raw.items():
                if k == "description":
                    entry[k] = self.text(v, f"{key}.{k}")
                elif k == "pins":
                    entry["pins"] = self.profile_pins(f"{key}.pins", v, out)
                else:
                    self.skip(f"{key}.{k}", "unknown llama-swap key")
            if not entry.get("pins"):
                self.skip(key, "left out: none of its pins names a model of the converted catalogue")
                continue
            profiles[pid] = {k: v for k, v in entry.items() if _given(v)}
        return profiles

    def profile_pins(self, key: str, value: Any, out: dict[str, Any]) -> dict[str, str | None]:
        known = set(out.get("selectors", {}))
        for name, m in out["models"].items():
            known.update((name, *m.get("aliases", ()), *m.get("set_params_by_id", {})))
        pins: dict[str, str | None] = {}
        for pin, target in self.want(value or {}, dict, key, "a mapping of model ID: model ID").items():
            where, pin = f"{key}.{pin}", str(pin)
            if not NAME_RE.match(pin):
                self.skip(where, f"{pin!r} is not a valid llama-router name ({NAME_RULE})")
                continue
            if target is None or target == "":
                pins[pin] = None
                continue
            target = self.text(target, where).strip()
            name = target if target in known else self.names.get(target, target)  # a virtual id stays one
            if name in known or self.peer_model(name, out.get("peers", {})):
                pins[pin] = name
            else:
                self.skip(where, f"{target!r} is not a model of the converted catalogue")
        return pins

    @staticmethod
    def peer_model(name: str, peers: dict[str, Any]) -> bool:
        """`PEER/MODEL` of a converted peer, or a model a peer names (parse.py checks the same)."""
        peer, _, model = name.partition("/")
        if peer in peers and model:
            return not peers[peer].get("models") or any(fnmatchcase(model, p) for p in peers[peer]["models"])
        return any(fnmatchcase(name, p) for spec in peers.values() for p in spec.get("models", ()))

    def peers(self, value: Any) -> dict[str, Any]:
        """Other endpoints whose models are served here: `url`, `api_key`, `models`."""
        out = {}
        for pid, peer in self.want(value or {}, dict, "peers", "a mapping of peer ID: settings").items():
            key = f"peers.{pid}"
            self.want(peer, dict, key, "a mapping with proxy and models")
            if not NAME_RE.match(str(pid)):
                self.skip(key, f"{pid!r} is not a valid llama-router name ({NAME_RULE}), which a peer's ID must be")
                continue
            entry: dict[str, Any] = {}
            for k, v in peer.items():
                if k == "proxy":
                    entry["url"] = self.text(v, f"{key}.proxy")
                elif k == "apiKey" and str(v or "").strip():
                    entry["api_key"] = self.text(v, f"{key}.apiKey")
                elif k == "models":
                    entry["models"] = [self.text(x, f"{key}.models[{i}]")
                                       for i, x in enumerate(self.want(v or [], list, f"{key}.models", "a list"))]
                elif k == "timeouts":
                    timeouts = self.timeouts(f"{key}.timeouts", v, _PEER_TIMEOUTS_SKIPPED)
                    if timeouts:
                        entry["timeouts"] = timeouts
                elif k == "filters":
                    self.peer_filters(f"{key}.filters", v, entry)
                elif k != "apiKey":
                    self.skip(f"{key}.{k}", "unknown llama-swap key")
            if "url" not in entry:
                raise self.fail(f"{key}.proxy", "expected the peer's URL")
            out[str(pid)] = entry
        return out

    # ---------------------------------------------------------------- groups

    def group_settings(self, top: dict[str, Any]) -> Any:
        """Top-level `groups` (older llama-swap) or `routing.router.settings.groups`; the
        matrix, wherever it is, is reported."""
        groups = top.get("groups")
        for key, value in self.want(top.get("routing") or {}, dict, "routing", "a mapping").items():
            if key == "scheduler":
                self.scheduler(value)
            elif key != "router":
                self.skip(f"routing.{key}", "unknown llama-swap key")
            else:
                router = self.want(value or {}, dict, "routing.router", "a mapping")
                settings = self.want(router.get("settings") or {}, dict, "routing.router.settings", "a mapping")
                if settings.get("matrix") is not None:
                    self.skip("routing.router.settings.matrix", MEMORY_PLACEMENT)
                if router.get("use") == "matrix":
                    self.skip("routing.router.use", f"matrix: {MEMORY_PLACEMENT}")
                elif groups is None:
                    groups = settings.get("groups")
        return self.want(groups or {}, dict, "groups", "a mapping of group ID: settings")

    def scheduler(self, value: Any) -> None:
        """`routing.scheduler`: fifo's priorities become each model's `priority` (a request for a
        model of higher priority is served first, as llama-swap's fifo); no other scheduler exists."""
        scheduler = self.want(value or {}, dict, "routing.scheduler", "a mapping")
        use = scheduler.get("use", "fifo")
        if use != "fifo":
            self.skip("routing.scheduler.use", f"{use!r}: llama-swap's only scheduler is fifo, which is what "
                      "the router does (with model priorities)")
        settings = self.want(scheduler.get("settings") or {}, dict, "routing.scheduler.settings", "a mapping")
        for name, s in settings.items():
            if name != "fifo":
                self.skip(f"routing.scheduler.settings.{name}", "unknown llama-swap scheduler")
                continue
            fifo = self.want(s or {}, dict, "routing.scheduler.settings.fifo", "a mapping")
            for k, v in fifo.items():
                if k != "priority":
                    self.skip(f"routing.scheduler.settings.fifo.{k}", "unknown llama-swap key")
                    continue
                where = "routing.scheduler.settings.fifo.priority"
                for mid, n in self.want(v or {}, dict, where, "a mapping of model ID: priority").items():
                    n = self.want(n, int, f"{where}.{mid}", "a whole number")
                    model = self.names.get(str(mid).strip())
                    if model is None or model not in self.models:
                        self.skip(f"{where}.{mid}", f"{mid!r} is not a model of the converted catalogue")
                    elif not -1000 <= n <= 1000:
                        self.skip(f"{where}.{mid}", f"{n}: a model's priority is -1000 to 1000")
                    elif n:
                        self.models[model]["priority"] = n

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
                elif self.names[mid] in self.models and self.models[self.names[mid]].get("url"):
                    self.skip(f"{key}.members[{i}]", f"{mid!r} is served at its url: the router never starts or "
                              "stops it, whatever its group")
                elif self.names[mid] in self.models:
                    names.append(self.names[mid])
            for k in sorted(set(g) - {"swap", "exclusive", "persistent", "members"}):
                self.skip(f"{key}.{k}", "unknown llama-swap key")
            if names:
                plans.append(_Group(str(gid), swap, exclusive, persistent, names))
        pool = [n for mid, n in self.names.items() if mid in ids and n in self.models and mid not in owner
                and not self.models[n].get("url")]
        return self.place(plans, pool)

    def place(self, plans: list[_Group], pool: list[str]) -> int | None:
        """Groups that stop the others stay llama-router groups (models without one: the pool);
        the others join the one they run beside, if there is only one."""
        regular = [g for g in plans if not g.joins] + ([_Group("", True, True, False, pool)] if pool else [])
        joiners = [g for g in plans if g.joins]
        # Pinned members can join the one group they run beside; pinned anywhere else would block it.
        merge = all(not g.swap or len(g.names) == 1 for g in joiners) and (
            len(regular) == 1 or (not regular and len(joiners) == 1))
        limits: dict[str, list[int]] = {}  # llama-router group ("" = the pool) -> [models together, models]
        for g in regular + joiners:
            host = (regular[0].gid if regular else g.gid) if g.joins and merge else g.gid
            limit = limits.setdefault(host, [0, 0])
            limit[0] += 1 if g.swap and not (g.joins and merge) else len(g.names)
            limit[1] += len(g.names)
            for name in g.names:
                self.models[name].update(group=host or None, pinned=g.persistent and merge)
            if g.joins and merge and not g.persistent and regular:
                self.report.append(
                    f"groups.{g.gid}.exclusive: changed: its members join "
                    f"{f'group {host}' if host else 'the models without a group'} (router.models_max counts them "
                    "too): they run beside those, and loading one of those stops them only when memory or "
                    "models_max needs the room (llama-swap would stop them)")
            if g.joins and not merge:
                what = ("persistent", "pinned models of one llama-router group would refuse every load outside "
                        "it, and never swap among themselves; its members swap like others") if g.persistent else (
                        "exclusive", "llama-router groups are exclusive: loading a model of another group stops "
                        "this group's models, as it can join no single group that runs beside all the others")
                self.skip(f"groups.{g.gid}.{what[0]}", what[1])
        needed = min((n for n, size in limits.values() if size > 1), default=None)
        for gid, (n, size) in limits.items():
            if needed is not None and size > 1 and n > needed:
                self.skip(f"groups.{gid}.swap", f"its {n} models run together in llama-swap; "
                          f"router.models_max ({needed}) is one limit for every group")
        return needed
