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


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Each module of the package at `root` (a folder named `router`), by dotted name."""
    found = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
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


def upward_imports(root: Path = ROOT) -> list[str]:
    """`name imports target` for each import of a higher layer, in the package at `root`."""
    wrong = []
    for name, path in modules(root).items():
        for target in imports(path):
            if layer_of(target) > layer_of(name):
                wrong.append(f"{name} imports {target}")
    return sorted(wrong)


def test_layers_only_import_downward():
    wrong = upward_imports()
    assert not wrong, "upward imports:\n" + "\n".join(wrong)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The checker above, run on a package of three modules: one imports upward."""
    package = tmp_path / "router"
    (package / "core").mkdir(parents=True)
    (package / "http").mkdir()
    (package / "http" / "app_keys.py").write_text("from router.core.scheduler import State\n")  # downward
    (package / "core" / "scheduler.py").write_text("from router.catalogue.config import Config\n")  # downward
    (package / "core" / "manager.py").write_text("from router.core.scheduler import State\n"
                                                 "from router.http.app_keys import MANAGER\n")  # upward
    assert upward_imports(package) == ["router.core.manager imports router.http.app_keys"]


def test_modules_stay_short_unless_they_say_why():
    long = []
    for name, path in modules().items():
        lines = path.read_text().count("\n")
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and LONG_REASON not in doc:
            long.append(f"{name}: {lines} lines")
    assert not long, f"modules over {MAX_LINES} lines without '{LONG_REASON} ...' in their docstring: {long}"
