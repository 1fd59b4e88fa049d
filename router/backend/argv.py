"""Reading a child's command line: a flag's value, whether a flag is there,
and the slots it asks llama-server for."""

from __future__ import annotations

from collections.abc import Sequence


def arg_value(argv: Sequence[str], *names: str) -> str | None:
    """The value of the last `--flag VALUE` or `--flag=VALUE` among `names`."""
    found = None
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            found = argv[i + 1]
        else:
            flag, eq, value = arg.partition("=")
            if eq and flag in names:
                found = value
    return found


def has_flag(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def given_slots(argv: Sequence[str]) -> int | None:
    """The slot count `--parallel` sets, when it sets one (absent or -1: llama-server decides)."""
    n = arg_value(argv, "-np", "--parallel")
    return int(n) if n is not None and n.isdigit() and int(n) > 0 else None
