"""The package's architecture, checked: layers only import downward, and
modules stay small enough to read (docs/architecture.md draws the layers)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "router"
# Bottom to top. A module may import its own layer and the layers below it.
LAYERS = ["discovery", "catalogue", "upstream", "backend", "core", "http", "api", "ui", "cluster", "<top>"]
MAX_LINES = 300
LONG_REASON = "Longer than 300 lines because"


def layer_of(module: str) -> int:
    """`router.core.manager` -> index of "core"; top-level modules (app, server, cli) are the top."""
    parts = module.split(".")
    if parts == ["router"]:
        return -1  # the package itself: __version__ only
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else LAYERS.index("<top>")


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        found[name] = path
    return found


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; use router.<layer>.<module>")
    return {m for m in out if m == "router" or m.startswith("router.")}


def test_every_module_belongs_to_a_known_layer():
    for name in modules():
        parts = name.split(".")
        assert len(parts) <= 3, f"{name}: one folder per layer, no deeper"
        if len(parts) == 3:
            assert parts[1] in LAYERS, f"{name}: {parts[1]!r} is not a layer ({LAYERS})"


def test_layers_only_import_downward():
    wrong = []
    for name, path in modules().items():
        for target in imports(path):
            if layer_of(target) > layer_of(name):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "upward imports:\n" + "\n".join(sorted(wrong))


def test_the_layer_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from router.http.app_keys import MANAGER\n")
    assert layer_of("router.core.manager") < layer_of(next(iter(imports(bad))))


def test_modules_stay_short_unless_they_say_why():
    long = []
    for name, path in modules().items():
        lines = path.read_text().count("\n")
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and LONG_REASON not in doc:
            long.append(f"{name}: {lines} lines")
    assert not long, f"modules over {MAX_LINES} lines without '{LONG_REASON} ...' in their docstring: {long}"
