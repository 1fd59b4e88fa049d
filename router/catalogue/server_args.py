"""llama-server's argument table, read from the binary's own `--help`.

Longer than 300 lines because reading the help text, resolving a name to its
option and cutting/merging command lines are one table's three uses, and the
rules that make them agree with llama.cpp (negations, repeatable options,
two-value options) must live next to each other.

A llama-server argument has several spellings (`-c`, `--ctx-size`, `ctx-size`
in a preset, `LLAMA_ARG_CTX_SIZE` in the environment), a flag has its
negation (`--jinja` / `--no-jinja`), and the set changes with every llama.cpp
build. So the table is read from the binary the children run, once per binary
file (path and mtime), and never written down here.

The help text is llama.cpp's `common_arg::to_string()` (common/arg.cpp): the
names (`args` then `args_neg`, joined by ", "), then the value hint(s), then
the help from column 40, where `set_env()` appended `(env: NAME)`. A flag's
negations are told apart from its names by shape: they start at the first
`--no-X` that follows a long name, and include the short names just before
it (`-kvo, --kv-offload, -nkvo, --no-kv-offload`).

`merge()` is llama.cpp's router precedence (tools/server/server-models.cpp,
`load_models`: model preset over `[*]`, the router's command line over
both): a later layer replaces an option of an earlier one, whichever of its
names either used, and a flag's negation is the same option. The
exception are the options whose every occurrence counts on one llama-server
command line (their handler appends: `--lora`, `--override-kv`...): within one
layer all their occurrences are kept; a later layer that names the option
replaces them all, as llama.cpp's router does (one value per option).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

HELP_TIMEOUT_S = 10.0
_HELP_COLUMN = 40  # common_arg::to_string(): n_leading_spaces

# Options whose handler in common/arg.cpp appends to a list instead of setting a value,
# so that every occurrence on a command line counts (llama-server warns "specified
# multiple times", but `--lora a --lora b` loads both). Matched by any of the option's
# names, so a renamed spelling in a later build still counts.
REPEATABLE = frozenset({
    "--lora", "--lora-scaled",  # params.lora_adapters.push_back
    "--control-vector", "--control-vector-scaled",  # params.control_vectors.push_back
    "--override-kv",  # string_parse_kv_override -> kv_overrides.push_back
    "--override-tensor", "--override-tensor-draft", "--spec-draft-override-tensor",  # parse_tensor_buffer_overrides
    "--reverse-prompt",  # params.antiprompt.emplace_back
    "--logit-bias",  # sampling.logit_bias.push_back
    "--dry-sequence-breaker",  # dry_sequence_breakers.emplace_back
    "--rpc",  # add_rpc_devices registers each server list
    "--alias", "--tags",  # model_alias / model_tags .insert
    "--api-key", "--api-key-file",  # params.api_keys.push_back
    "--spec-type",  # speculative.types.insert(end, ...)
})
# Options with two values (common_arg's value_hint_2, handler_str_str).
TWO_VALUES = frozenset({"--control-vector-layer-range"})

_ENV_RE = re.compile(r"\(env: ([A-Za-z0-9_]+)\)")
_NAME_RE = re.compile(r"-{1,2}[A-Za-z0-9][^\s,]*")
_SECTION_RE = re.compile(r"^-{3,} .* -{3,}$")
_FLAG_RE = re.compile(r"^-{1,2}[A-Za-z]")


class ServerArgsError(RuntimeError):
    """llama-server's argument table cannot be read; says which binary and why."""


@dataclass(frozen=True)
class ServerOption:
    """One llama-server option: its names, whether it takes a value, its env name."""

    names: tuple[str, ...]  # e.g. ("-c", "--ctx-size"); the long name llama.cpp writes is last
    takes_value: bool
    env: str | None = None
    negations: tuple[str, ...] = ()  # e.g. ("--no-jinja",); only flags have them

    @property
    def key(self) -> str:
        """The canonical flag: the last name, the one llama.cpp's router writes (`args.back()`)."""
        return self.names[-1]

    @property
    def repeatable(self) -> bool:
        """Every occurrence counts on one command line (see REPEATABLE)."""
        return any(n in REPEATABLE for n in self.names)

    @property
    def arity(self) -> int:
        """Arguments after the flag: 0 for a flag, 2 for --control-vector-layer-range, else 1."""
        if not self.takes_value:
            return 0
        return 2 if any(n in TWO_VALUES for n in self.names) else 1

    @property
    def envs(self) -> tuple[str, ...]:
        """The env names llama.cpp accepts (`common_arg::get_env`): a negatable flag's
        `LLAMA_ARG_X` also has `LLAMA_ARG_NO_X`, which turns it off."""
        if self.env is None:
            return ()
        if self.negations and "LLAMA_ARG_" in self.env:
            return self.env, self.env.replace("LLAMA_ARG_", "LLAMA_ARG_NO_")
        return (self.env,)

    def negates(self, name: str) -> bool:
        """`name` (a flag, a flag without dashes, or an env name) turns this option off."""
        if name in self.negations or name in {n.lstrip("-") for n in self.negations}:
            return True
        return len(self.envs) == 2 and name == self.envs[1]


class ServerArgs:
    """The table: every option of one llama-server build, found by any of its names."""

    def __init__(self, options: Sequence[ServerOption]):
        self.options = tuple(options)
        self._by_name: dict[str, ServerOption] = {}
        # Flags with dashes first, then dashless preset keys, then env names: an exact
        # spelling always wins over a stripped one (llama.cpp keeps one map: key_to_opt).
        for opt in self.options:
            for n in (*opt.names, *opt.negations):
                self._by_name.setdefault(n, opt)
        for opt in self.options:
            for n in (*opt.names, *opt.negations):
                self._by_name.setdefault(n.lstrip("-"), opt)
        for opt in self.options:
            for e in opt.envs:
                self._by_name.setdefault(e, opt)

    def __len__(self) -> int:
        return len(self.options)

    def __repr__(self) -> str:
        return f"ServerArgs({len(self.options)} options)"

    @classmethod
    def from_help(cls, text: str) -> ServerArgs:
        """The table from `llama-server --help` output."""
        return cls([_parse_block(head, help_) for head, help_ in _blocks(text)])

    def option(self, name: str) -> ServerOption | None:
        """The option spelled `name`: `-c`, `--ctx-size`, `ctx-size`, `c`, `LLAMA_ARG_CTX_SIZE`,
        a negation (`--no-jinja`, `no-jinja`); `--ctx_size` too (llama.cpp reads `_` as `-`
        in long flags). None when llama-server has no such option."""
        found = self._by_name.get(name)
        if found is None and name.startswith("--"):
            found = self._by_name.get(name.replace("_", "-"))
        return found

    def split(self, argv: Sequence[str]) -> list[tuple[ServerOption | None, list[str]]]:
        """`argv` cut into options, each with its tokens (the flag as written, then its
        values). A known option takes as many values as it has, whatever they look like
        (as llama-server does); an unknown flag takes the next token when that is not a
        flag (a negative number is a value); a stray value stands alone (option None)."""
        out: list[tuple[ServerOption | None, list[str]]] = []
        i = 0
        while i < len(argv):
            tok = argv[i]
            opt = self.option(tok) if _FLAG_RE.match(tok) else None
            if opt is not None:
                out.append((opt, list(argv[i:i + 1 + opt.arity])))
                i += 1 + opt.arity
            elif _FLAG_RE.match(tok) and i + 1 < len(argv) and not _FLAG_RE.match(argv[i + 1]):
                out.append((None, [tok, argv[i + 1]]))
                i += 2
            else:
                out.append((None, [tok]))
                i += 1
        return out

    def merge(self, *layers: Sequence[str]) -> list[str]:
        """The layers as one command line, later layers winning option by option.

        An option is the same under any of its names, and a flag and its negation
        are one option (`--jinja` then `--no-jinja`: `--no-jinja`). Each option
        stays where it first appeared, with the tokens of the last layer that gave
        it. Within one layer a repeated option keeps its last occurrence, except a
        repeatable one (REPEATABLE), which keeps them all; a later layer that gives
        a repeatable option replaces all of an earlier layer's. An unknown flag is
        an option of its own spelling; a stray value is kept as it is."""
        slots: dict[object, list[list[str]]] = {}
        stray = 0
        for layer in layers:
            mine: dict[object, list[list[str]]] = {}
            for opt, tokens in self.split(layer):
                ident: object
                if opt is not None:
                    ident = opt.key
                elif _FLAG_RE.match(tokens[0]):
                    ident = tokens[0].replace("_", "-") if tokens[0].startswith("--") else tokens[0]
                else:
                    stray += 1
                    ident = ("value", stray)
                if ident in mine and opt is not None and opt.repeatable:
                    mine[ident].append(tokens)
                else:
                    mine[ident] = [tokens]
            for ident, occurrences in mine.items():
                slots[ident] = occurrences
        return [tok for occurrences in slots.values() for tokens in occurrences for tok in tokens]


def _blocks(text: str) -> list[tuple[str, str]]:
    """(names and value hint, help text) of every option in the help output."""
    blocks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("-") and not _SECTION_RE.match(line.strip()):
            c = _HELP_COLUMN
            if len(line) > c and line[c - 3:c] == "   " and line[c] != " ":
                blocks.append((line[:c].rstrip(), [line[c:]]))
            else:
                blocks.append((line.rstrip(), []))
        elif blocks and line.strip():
            blocks[-1][1].append(line.strip())
    return [(head, "\n".join(help_)) for head, help_ in blocks]


def _parse_block(head: str, help_: str) -> ServerOption:
    """`-kvo,  --kv-offload, -nkvo, --no-kv-offload` / `-c,    --ctx-size N` and its help."""
    names: list[str] = []
    rest = head
    while True:
        m = _NAME_RE.match(rest)
        if m is None:
            break
        names.append(m.group(0))
        rest = rest[m.end():]
        if not rest.startswith(","):
            break
        rest = rest[1:].lstrip()
    hint = rest.strip()
    envs = _ENV_RE.findall(help_)
    env = envs[-1] if envs else None
    if hint:
        return ServerOption(tuple(names), True, env)
    positives, negations = _split_negations(names)
    return ServerOption(positives, False, env, negations)


def _split_negations(names: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A flag's names are its `args` then its `args_neg`; the negations begin after the
    last long name that comes before the first `--no-X` (`--no-host` alone is a flag)."""
    first_no = next((i for i, n in enumerate(names)
                     if n.startswith("--no-") and any(p.startswith("--") for p in names[:i])), None)
    if first_no is None:
        return tuple(names), ()
    last_long = max(i for i in range(first_no) if names[i].startswith("--"))
    return tuple(names[:last_long + 1]), tuple(names[last_long + 1:])


def server_args(binary: str = "llama-server") -> ServerArgs:
    """The table of `binary` (a path, or a name looked up on PATH), read from its
    `--help` once per binary file: a rebuilt binary (new mtime or size) is read again."""
    path = binary if os.sep in binary else shutil.which(binary)
    if path is None:
        raise ServerArgsError(f"{binary}: not found on PATH")
    try:
        st = os.stat(path)
    except OSError as e:
        raise ServerArgsError(f"{path}: {e.strerror or e}") from None
    return _read_table(os.path.realpath(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8)
def _read_table(path: str, mtime_ns: int, size: int) -> ServerArgs:
    try:
        done = subprocess.run([path, "--help"], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=HELP_TIMEOUT_S, text=True, errors="replace", check=False)
    except subprocess.TimeoutExpired:
        raise ServerArgsError(f"{path} --help: no answer within {HELP_TIMEOUT_S:g} s") from None
    except OSError as e:
        raise ServerArgsError(f"{path} --help: cannot run: {e.strerror or e}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ServerArgsError(f"{path} --help: exited with code {done.returncode}: {last}")
    table = ServerArgs.from_help(done.stdout)
    if table.option("--port") is None or table.option("--model") is None:
        raise ServerArgsError(f"{path} --help: no llama-server argument table in its output "
                              "(is it llama-server?)")
    return table
