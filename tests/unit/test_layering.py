"""The floor plan holds: Ray only in ``deployments/``, the HTTP layer imported only by itself and
the builder, ``noa/`` never importing ``deployments/``, each subpackage importing only the
floors below it, and no import cycles, between packages or between modules.

Imports are read from the source (every ``import`` statement, in functions too), so a lazy
import cannot hide a dependency.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import noa

ROOT = Path(__file__).resolve().parents[2]

# Lowest first: a room may import only rooms on lower floors (and itself). Rooms of the next
# issues have their floors here already: jobs over the service, queues over jobs, mcp over
# the service beside http.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("noa", "noa.context", "noa.errors"),
    ("noa.config",),
    ("noa.wire",),
    ("noa.storage",),
    ("noa.observability",),
    ("noa.providers",),
    ("noa.routing",),
    ("noa.cache",),
    ("noa.access",),
    ("noa.service",),
    ("noa.jobs",),
    ("noa.queues",),
    ("noa.http", "noa.mcp"),
    ("noa.build",),
    ("noa.cli",),
    ("noa.testing",),
)
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def modules(package: str) -> dict[str, Path]:
    """Every module of ``package`` (a directory under the repository root) by dotted name."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, *, top_level_only: bool = False) -> Iterator[str]:
    """The modules ``name`` imports (``from x import y`` yields ``x.y`` when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def room(module: str) -> str:
    """The room a module lives in: its subpackage of ``noa``, or the top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def graph(package: str, *, top_level_only: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of the repository it imports."""
    ours = {**modules("noa"), **modules("deployments")}
    mods = modules(package)
    return {
        name: {i for i in imports(name, path, top_level_only=top_level_only) if i in ours} - {name}
        for name, path in mods.items()
    }


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, if it has any."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_ray_is_imported_only_by_deployments() -> None:
    for name, path in modules("noa").items():
        ray = [i for i in imports(name, path) if i == "ray" or i.startswith("ray.")]
        assert not ray, f"{name} imports {ray}: Ray belongs in deployments/"


def test_the_cores_never_import_ray_at_run_time() -> None:
    names = [m.name for m in pkgutil.walk_packages(noa.__path__, "noa.")]
    assert "noa.routing.router" in names and "noa.http.app" in names
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in names)
        + "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_only_http_and_build_import_the_http_layer() -> None:
    for name, targets in graph("noa").items():
        if room(name) in ("noa.http", "noa.build"):
            continue
        http = sorted(t for t in targets if room(t) == "noa.http")
        assert not http, f"{name} imports {http}: only noa/http and noa/build may"


def test_noa_never_imports_deployments() -> None:
    for name, path in modules("noa").items():
        up = sorted(i for i in imports(name, path) if i.split(".")[0] == "deployments")
        assert not up, f"{name} imports {up}: deployments/ builds on noa/, not the reverse"


def test_every_room_has_a_floor_and_imports_only_lower_floors() -> None:
    for name, targets in graph("noa").items():
        here = room(name)
        assert here in FLOOR, f"{here} is not on the floor plan (FLOORS in this test)"
        for target in targets:
            there = room(target)
            if there == here:
                continue
            assert FLOOR[there] < FLOOR[here], (
                f"{name} imports {target}: {here} (floor {FLOOR[here]}) may import only lower"
                f" floors, and {there} is on floor {FLOOR[there]}"
            )


def test_no_import_cycles_between_rooms_or_modules() -> None:
    rooms: dict[str, set[str]] = {}
    for name, targets in {**graph("noa"), **graph("deployments")}.items():
        rooms.setdefault(room(name), set()).update(
            room(t) for t in targets if room(t) != room(name)
        )
    assert cycle(rooms) is None, f"rooms import each other: {cycle(rooms)}"
    modules_graph = {
        **graph("noa", top_level_only=True),
        **graph("deployments", top_level_only=True),
    }
    assert cycle(modules_graph) is None, f"modules import each other: {cycle(modules_graph)}"
