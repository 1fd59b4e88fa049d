"""llama.cpp's router-mode command line, read into the catalogue.

`llama-server --models-dir ~/m -ngl 99 -c 8192` runs llama.cpp's router:
every argument it does not know as a router setting becomes a default
argument of every child. `llama-router` takes the same command line:
`split_command_line` separates llama-router's own options from the
llama-server arguments (told apart with llama-server's own argument table,
so `-c 8192` is a context size and `--jinja` takes no value), and
`apply_preset` lays a `--models-preset` INI file over the served catalogue
the way llama.cpp's router does (tools/server/server-models.cpp,
`load_models`):

- the preset's `[*]` section is a default of every model (lowest);
- a section named like a model that exists (a Hugging Face cache id, a
  `--models-dir` model, a catalogue entry or alias) adds its arguments to
  that model, over the model's own;
- any other section is a new model and names its `model` file or its
  `hf-repo` (a repo already in the Hugging Face cache is served from there;
  otherwise llama-server downloads it with `-hf` on first load);
- the command line wins over both (Config.cli_args, merged at launch);
- `load-on-startup` models are loaded once the port is open;
- `dedup-cache-models` hides from the model list a cache model that a
  preset section serves from the same file (its `hf-repo` or its
  `spec-draft-hf`); it stays usable by id.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from router.catalogue.config import NAME_RE, NAME_RULE, RESERVED_FLAGS, Config, ConfigError, ModelSpec, SpawnSpec

if TYPE_CHECKING:  # both read on demand: the router starts without them when no preset is given
    from router.catalogue.preset import Preset
    from router.catalogue.server_args import ServerArgs

# llama-server options that only mean something to a router: they are llama-router's own.
ROUTER_ONLY = frozenset({"--models-dir", "--models-max", "--models-preset", "--models-autoload",
                         "--no-models-autoload", "--api-key", "--api-key-file", "--sleep-idle-seconds",
                         "--host", "--port"})
# Arguments that name one model: a router serves many, so they belong to a model entry.
PER_MODEL = frozenset({"-m", "--model", "-a", "--alias", "-mm", "--mmproj", "-hff", "--hf-file",
                       "-mu", "--model-url"})


def split_command_line(argv: Sequence[str], own: set[str], takes_value: set[str],
                       table: ServerArgs | None) -> tuple[list[str], list[str]]:
    """(llama-router's own arguments, llama-server arguments for every child).

    `own` holds llama-router's option strings and `takes_value` those of them
    that take a value. `-c` is llama-server's context size, as in llama.cpp; an
    existing `.yaml`/`.yml` file after `-c` still means `--config` (llama-router's
    older spelling). Without a table, a child option takes the next argument as
    its value when that does not start with '-'."""
    mine: list[str] = []
    child: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        flag, eq, _ = tok.partition("=")
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if tok == "-c" and nxt is not None and _is_catalogue_file(nxt):
            mine += ["--config", nxt]
            i += 2
            continue
        if tok == "-c" and nxt is not None and not nxt.isdigit():
            raise ConfigError("<command line>", "-c", f"is llama-server's context size and expects a number, got "
                              f"{nxt!r} (a catalogue file is --config PATH)")
        if flag in own and tok.startswith("-"):
            mine.append(tok)
            if flag in takes_value and not eq and nxt is not None:
                mine.append(nxt)
                i += 1
            i += 1
            continue
        if not tok.startswith("-") or _is_number(tok):
            raise ConfigError("<command line>", tok, "unexpected argument (expected an option such as --models-dir)")
        option = table.option(flag) if table is not None else None
        if (option is not None and option.key in RESERVED_FLAGS | PER_MODEL) or flag in RESERVED_FLAGS | PER_MODEL:
            raise ConfigError("<command line>", flag, "names one model's file, alias or address; llama-router "
                              "serves many: put it in a model entry (catalogue `models:`, a preset section) instead")
        if table is not None and option is None:
            raise ConfigError("<command line>", flag, "is neither a llama-router option nor a llama-server "
                              "argument (see llama-router --help and llama-server --help)")
        child.append(tok)
        wants = option.takes_value if option is not None else (nxt is not None and (not nxt.startswith("-")
                                                                                    or _is_number(nxt)))
        if wants and not eq:
            if nxt is None:
                raise ConfigError("<command line>", flag, "expects a value")
            child.append(nxt)
            i += 1
        i += 1
    return mine, child


def remote_preset(refs: Sequence[str], models_preset: str | None,
                  child_args: Sequence[str]) -> tuple[list[str], str | None]:
    """(the `-hf` references that name models, the models preset): a repo that holds a
    `preset.ini` is llama.cpp's remote preset, read as `--models-preset` (the file is
    fetched into the Hugging Face cache; offline with `--offline` or LLAMA_ARG_OFFLINE,
    the cache's copy). One models preset: a second one is an error, where llama.cpp
    would let the repo's silently replace the --models-preset file."""
    from router.catalogue.preset import TRUTHY
    from router.discovery.hf_preset import PRESET_FILE, fetch_preset
    from router.discovery.huggingface import HFError

    offline = "--offline" in child_args or os.environ.get("LLAMA_ARG_OFFLINE", "").lower() in TRUTHY
    models: list[str] = []
    preset, given = models_preset, f"--models-preset {models_preset}"
    for ref in refs:
        try:
            path = fetch_preset(ref, offline=offline)
        except HFError as e:
            raise ConfigError("<command line>", "-hf", str(e)) from None
        if path is None:
            models.append(ref)
            continue
        if preset is not None:
            raise ConfigError("<command line>", "-hf", f"{ref} holds a {PRESET_FILE}, and {given} is already "
                              "the models preset: give one (a --models-preset file or one preset repo)")
        preset, given = str(path), f"-hf {ref}"
        logging.getLogger("router").warning("using the %s of the Hugging Face repo %s as the models preset (%s): "
                                            "use only presets you trust, they choose what the children run",
                                            PRESET_FILE, ref, path)
    return models, preset


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_catalogue_file(text: str) -> bool:
    return text.lower().endswith((".yaml", ".yml")) and os.path.isfile(os.path.expanduser(text))


def read_api_keys(keys: Sequence[str], key_file: str | None) -> tuple[str, ...]:
    """`--api-key a,b` (llama.cpp: a comma-separated list) and `--api-key-file` (a key a line)."""
    out = [k.strip() for arg in keys for k in arg.split(",") if k.strip()]
    if key_file:
        try:
            with open(os.path.expanduser(key_file), encoding="utf-8") as f:
                out += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        except OSError as e:
            raise ConfigError(key_file, "--api-key-file", f"cannot read: {e.strerror or e}") from None
    return tuple(dict.fromkeys(out))


def apply_preset(config: Config, preset: Preset, source: str, table: ServerArgs) -> Config:
    """`config` (the served catalogue, sources already scanned) with `preset` laid over it."""
    defaults = tuple(table.merge(preset.defaults, config.spawn.args))
    models = dict(config.models)
    preload = list(config.router.preload)
    for pm in preset.models:
        existing = config.resolve(pm.name)
        aliases = tuple(a for a in pm.aliases if config.resolve(a) is None)
        if existing is not None:
            spec = replace(existing, args=tuple(table.merge(existing.args, pm.args)), state="manual",
                           aliases=existing.aliases + aliases, path=pm.path or existing.path,
                           mmproj=pm.mmproj or existing.mmproj)
        else:
            if not NAME_RE.match(pm.name):
                raise ConfigError(source, f"[{pm.name}]", f"expected a model name of {NAME_RULE}")
            path, spawn = pm.path, None
            cached = _cached(config, pm.hf_repo, _arg(table, pm.args, "LLAMA_ARG_HF_FILE")) \
                if pm.hf_repo and path is None else None
            if cached is not None and cached.path:
                path = cached.path
            elif pm.hf_repo and path is None:
                # Not downloaded yet: llama-server fetches it on the first load.
                spawn = SpawnSpec(command=("llama-server", "-hf", pm.hf_repo, "--alias", "$name",
                                           "--host", "$host", "--port", "$port"), args=defaults)
            if path is None and spawn is None:
                raise ConfigError(source, f"[{pm.name}]", "is not a model the router knows; name its file "
                                  "with `model = /path/to/file.gguf` or its repo with `hf-repo = user/repo:QUANT`")
            spec = ModelSpec(name=pm.name, path=path, aliases=aliases, args=pm.args, mmproj=pm.mmproj,
                             spawn=spawn, state="manual")
        models[spec.name] = spec
        if pm.load_on_startup and spec.name not in preload:
            preload.append(spec.name)
    for name in _deduplicated(config, preset, table):
        if models[name].state == "auto":  # a section of the same name made it the preset's own
            models[name] = replace(models[name], unlisted=True)
    spawn = replace(config.spawn, args=defaults)
    return replace(config, models=models, spawn=spawn, router=replace(config.router, preload=tuple(preload)))


def _deduplicated(config: Config, preset: Preset, table: ServerArgs) -> set[str]:
    """The cache models that `dedup-cache-models` hides from the model list (llama.cpp's
    `load_models`): those a section with the flag (its own or `[*]`'s) serves from the same
    file through `hf-repo` (with `hf-file`) or `spec-draft-hf` (with `spec-draft-model`).
    They stay routable by id; only the list leaves them out."""
    hidden: set[str] = set()
    for pm in preset.models:
        if not pm.dedup_cache_models:
            continue
        refs = [(pm.hf_repo, _arg(table, pm.args, "LLAMA_ARG_HF_FILE")),
                (_arg(table, pm.args, "LLAMA_ARG_SPEC_DRAFT_HF_REPO"),
                 _arg(table, pm.args, "LLAMA_ARG_SPEC_DRAFT_MODEL"))]
        for ref, file in refs:
            cached = _cached(config, ref, file) if ref else None
            if cached is not None and cached.state == "auto":
                hidden.add(cached.name)
    return hidden


def _arg(table: ServerArgs, args: Sequence[str], env: str) -> str | None:
    """The value `args` give the llama-server option whose env name is `env` (the last one)."""
    wanted = table.option(env)
    values = [tokens[-1] for opt, tokens in table.split(args) if wanted is not None and opt is wanted
              and len(tokens) > 1]
    return values[-1] if values else None


# common/download.cpp, find_best_model: the quants a reference without one resolves to, in order.
_DEFAULT_TAGS = ("Q4_K_M", "Q8_0")


def _cached(config: Config, ref: str, hf_file: str | None = None) -> ModelSpec | None:
    """The catalogued model a `user/repo[:TAG]` reference is served from: a model of that
    name or alias, else the Hugging Face cache file llama.cpp resolves it to
    (common_download_resolve_path): `hf_file` when given, else the first file of the repo's
    snapshot whose path holds `TAG` followed by `.` or `-`, without a tag Q4_K_M, then Q8_0,
    then the first model file."""
    named = config.resolve(ref) if hf_file is None else None
    if named is not None:
        return named
    repo, _, tag = ref.partition(":")
    files = sorted(((rel, spec) for spec in config.models.values() if spec.state == "auto" and spec.path
                    for repo_id, rel in [_in_hf_cache(spec.path)] if repo_id == repo), key=lambda f: f[0])
    if hf_file is not None:
        return next((spec for rel, spec in files if rel == hf_file), None)
    for t in (tag,) if tag else _DEFAULT_TAGS:
        pattern = re.compile(re.escape(t) + "[.-]", re.IGNORECASE)
        found = next((spec for rel, spec in files if pattern.search(rel)), None)
        if found is not None:
            return found
    return files[0][1] if files and not tag else None


def _in_hf_cache(path: str) -> tuple[str | None, str]:
    """(repo id, path inside the snapshot) of a file in a Hugging Face cache; (None, "") elsewhere."""
    parts = Path(path).parts
    for i in range(len(parts) - 3):
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots":
            return parts[i][len("models--"):].replace("--", "/"), "/".join(parts[i + 3:])
    return None, ""
