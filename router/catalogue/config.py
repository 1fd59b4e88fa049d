"""The catalogue as typed settings: frozen dataclasses holding every default.

catalogue/parse.py reads the YAML file into these, with errors that name the
file, the key and what was expected.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_COMMAND = (
    "llama-server", "--model", "$path", "--alias", "$name",
    "--host", "$host", "--port", "$port",
)
# A model name: segments of letters, digits and . _ : + -, each starting with a letter or
# digit, joined by single '/' (llama.cpp's `user/repo:QUANT` ids). No '..' segment, no
# leading, trailing or doubled '/', no space or control character: a name is never a path.
# `$(?!\n)`: Python's `$` also matches before a final newline (the same text in the JSON Schema).
NAME_RE = re.compile(r"^(?=.{1,128}$)[A-Za-z0-9][A-Za-z0-9._:+-]*(?:/[A-Za-z0-9][A-Za-z0-9._:+-]*)*$(?!\n)")
NAME_RULE = "letters, digits and . _ : + -, with single '/' between parts (at most 128 characters)"


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

    command: tuple[str, ...] = DEFAULT_COMMAND
    health_endpoint: str = "/health"
    # Arguments of every child started this way, before the model's own `args`: for
    # llama-server a model's option replaces the same option here (a preset's `[*]`).
    args: tuple[str, ...] = ()


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
    pinned: bool = False  # never stopped to make room for another model
    concurrency_limit: int = 0  # requests in flight at once (0: no limit); the rest wait in the router
    max_queue: int = 0  # requests waiting at most (0: no limit); past it: 429 with Retry-After
    # What /v1/models shows as `name` (clients such as Open WebUI list it); the file's key is
    # `name`, as llama-swap's. None: the model's name, never the GGUF's general.name (two
    # entries on one file would look the same).
    display_name: str | None = field(default=None, metadata={"key": "name"})
    # The reply cap given to a generation request that sets none (max_tokens...); None: the
    # router's max_tokens_default, 0: none for this model.
    max_tokens_default: int | None = None

    @property
    def model_file(self) -> str | None:
        """The GGUF file this model is served from, when its path is one (a custom
        backend's `path` may name anything, e.g. a vLLM model id)."""
        return self.path if self.path and self.path.lower().endswith(".gguf") else None

    def launch_key(self) -> tuple:
        """What a running child was started from: a change here needs a restart."""
        return (self.path, self.args, self.env, self.spawn, self.mmproj)

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

    ram: int | str | None = "auto"
    gpu: tuple[int | str, ...] | int | str | None = "auto"  # one size per GPU, or one for all
    reserve: int = 1024 ** 3
    # Ask the first load of each launch plan for llama-server's buffer report (-lv 4): an exact
    # figure, at the price of that child's chattier log.
    probe: bool = False
    unified: bool | str = "auto"  # the GPU computes in the RAM (Apple silicon): auto (detect), True, False


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

    key: str = field(default="", repr=False)  # the secret itself, from `key` or the first line of `key_file`
    key_file: str | None = None
    models: tuple[str, ...] = ()  # fnmatch patterns over model names and aliases; () = every model
    role: str = "inference"  # read < inference < admin
    rate: Rate | None = None  # requests per period, a token bucket (429 past it)
    concurrency: int = 0  # requests in flight at once (0 = no limit; 429 past it)


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
    header_timeout: float = 10.0  # seconds a client has to send a request's headers (0 = no limit)
    body_timeout: float = 60.0  # seconds a client has to send a request's body (0 = no limit)
    max_client_connections: int = 512  # connections from one address at once (0 = no cap)
    log_lines: int = 500
    # Secrets: never part of repr(), so a logged config cannot leak them.
    admin_token: str | None = field(default=None, repr=False)
    api_keys: tuple[str | ApiKey, ...] = field(default=(), repr=False)
    # TLS: the server's certificate chain and private key (PEM); both or neither.
    tls_cert: str | None = None
    tls_key: str | None = None
    notify_model_swap: bool = False
    startup_model: str | None = None
    preload: tuple[str, ...] = ()  # models loaded in the background once the port is open
    # False (`--no-models-autoload`): a request for a model that is not running gets 400
    # instead of loading it, unless it asks `?autoload=true` (llama.cpp's router).
    models_autoload: bool = True
    ttl: float = 0.0  # idle seconds before a model unloads; 0 = never (a model's own ttl wins)
    # The reply cap (tokens) given to a generation request that sets none; 0 = none, as llama.cpp
    # (a model's own max_tokens_default wins).
    max_tokens_default: int = 0
    drain_timeout: float = 30.0
    watch_config: bool = True
    watch_folders: bool = True  # rescan when a GGUF file appears in or leaves a model folder
    swap_patience: float = 2.0  # seconds a busy model being swapped out keeps taking new requests
    # KV cache persistence (router/core/kv_persistence.py): None = on for llama-server children.
    kv_persistence: bool | None = None
    slot_save_path: str | None = None  # None = <cache folder>/slots
    slot_save_max_bytes: int = 4 * 1024 ** 3
    slot_save_timeout: float = 30.0

    ui_path: str | None = None  # a built llama.cpp WebUI (folder with index.html) served at "/"
    activity_size: int = 200  # requests kept for GET /api/activity
    memory: MemorySettings = field(default_factory=MemorySettings)


@dataclass(frozen=True)
class SourcesSpec:
    """Where models are discovered besides the `models:` list."""

    dirs: tuple[str, ...] = ()
    hf_cache: bool = True
    # Folders imported with --import-dir: walked again on every rescan (new models
    # become manual entries of the file) and watched for new files.
    import_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterSettings:
    """How the front of `llama-router --cluster` places requests across hosts (docs/cluster.md)."""

    placement: str = "memory"  # "memory": loaded first, then fewest evictions; "round_robin": hosts in turn
    # A model is loaded on up to `replicas` hosts; another copy starts when every copy has at
    # least `queue_threshold` requests in flight and waiting.
    replicas: int = 1
    queue_threshold: int = 4
    # How long a host's agent keeps its models after the last word from a front (a front
    # that restarts within it finds them loaded); then it stops them and leaves.
    front_grace: float = 60.0
    # How long a request that reaches a front just started waits for the hosts' first reports
    # (before them no host is known; a request waits as on one host during a load).
    start_wait: float = 30.0


PLACEMENTS = ("memory", "round_robin")


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
    router: RouterSettings = field(default_factory=RouterSettings)
    spawn: SpawnSpec = field(default_factory=SpawnSpec)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    sources: SourcesSpec = field(default_factory=SourcesSpec)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    source: str = "<defaults>"
    # Not keys of the file: models whose file is gone (hidden, 404), and what discovery saw.
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
            if name in spec.aliases:
                return spec
        return None

    def spawn_for(self, spec: ModelSpec) -> SpawnSpec:
        return spec.spawn or self.spawn

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
MIN_SECRET_LEN = 8


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "llama-router" / "config.yaml"


def default_slot_save_path() -> Path:
    return default_cache_dir() / "slots"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llama-router"
