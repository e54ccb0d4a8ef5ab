"""The package's imports run one way: a room imports only from rooms below it, and there
are no cycles between modules (read from the source, as ARCHITECTURE.md draws it)."""

from __future__ import annotations

import ast
from pathlib import Path

import selfsup

PACKAGE = Path(selfsup.__file__).parent

# Bottom to top; a room may import from its own modules and from any room in a lower layer.
LAYERS = [
    {"selfsup", "config", "files", "energy"},
    {"distributed", "recipes", "cache"},
    {"data"},
    {"losses", "schedules"},
    {"augment", "backbones", "heads"},
    {"methods"},
    {"evaluate"},
    {"train"},
    {"report", "plan"},
    {"modalities", "rundir"},
    {"runs", "export"},
    {"cli"},
]
LAYER_OF = {room: depth for depth, rooms in enumerate(LAYERS) for room in rooms}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports (anywhere in the file)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name, targets = module_name(path), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "selfsup":
                targets.add(node.module)
                # `from selfsup.data import tokens` names a module, not a symbol
                targets.update(f"{node.module}.{alias.name}" for alias in node.names
                               if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).with_suffix(".py").exists())
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name.split(".")[0] == "selfsup")
        found[name] = targets
    return found


def test_every_room_has_a_layer():
    assert {room(module) for module in imports()} <= set(LAYER_OF)


def test_no_import_runs_upward():
    upward = [
        f"{module} ({room(module)}) imports {target} ({room(target)})"
        for module, targets in imports().items()
        for target in targets
        if room(target) != room(module) and LAYER_OF[room(target)] >= LAYER_OF[room(module)]
    ]
    assert not upward, "\n".join(upward)


def test_method_files_import_no_other_method():
    """A method is one file: it may use the room's shared parts (base, memory, momentum),
    never another method's module."""
    from selfsup.methods import METHODS

    method_modules = {cls.__module__ for cls in METHODS.values()}
    crossing = [f"{module} imports {target}" for module in method_modules for target in imports_once[module]
                if target in method_modules and target != module]
    assert not crossing, "\n".join(crossing)


def test_no_import_cycles():
    graph = {module: {t for t in targets if t in imports_once} for module, targets in imports_once.items()}
    # A package's __init__ gathers its modules: its own imports of them are not a cycle.
    graph = {module: {t for t in targets if not t.startswith(module + ".")} for module, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph[module]:
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


imports_once = imports()
