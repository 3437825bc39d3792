"""One-way data flow among the rooms of ``attn_deploy`` (issue 14, item 1), read from the source with ``ast``.

A room is a sub-package (``export``, ``serve``, ...) or a top-level module (``errors``, ``parity``, ...);
``__init__`` is the package root (``__version__`` and a lazy facade that imports nothing at import time).
Checked: (a) no cycles among rooms, (b) every import goes to the same room or one below it in :data:`ORDER`,
(c) function-local imports outside ``commands/`` and ``cli.py`` (which import only what a command runs, to keep
the CLI light) are only of optional heavy dependencies, per file in :data:`ALLOWED_LOCAL`. Imports under
``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "attn_deploy"

ORDER = [
    # shared, bottom: no torch, imported by anyone
    "__init__",
    "errors",
    "fsutil",
    "machine",
    "markdown",
    "display",  # terminal display of the front ends (rich); only commands/ and cli.py import it
    "parity",
    "config",
    "artifacts",
    # stages, in data-flow order
    "attention",
    "data",
    "models",
    "rewrite",
    "backends",
    "validate",
    "export",
    "precision",
    "train",  # trainers (issue 11): loss, optimiser, EMA; reads data, models, validate
    # composition and front ends
    "workflow",
    "bench",
    "distill",  # composes training, the verified export (workflow) and ORT timing (bench)
    "serve",
    "commands",
    "cli",
]
"""Rooms bottom to top: a room imports only itself and rooms before it."""

LIGHT_FRONT_ENDS = ("commands", "cli")
"""Rooms whose function-local imports are the rule: a command imports only what it runs."""

ALLOWED_LOCAL = {
    "__init__.py": {"importlib"},  # the lazy facade: ``attn_deploy.export_onnx`` imports on first use
    "backends/tensorrt.py": {"tensorrt", "torch"},  # optional TensorRT; torch only for CUDA buffers
    "serve/loadgen.py": {"tritonclient"},  # optional extra for load generation
}
"""Function-local imports allowed outside the front ends, per file (top-level module names)."""


def room_of(module: str) -> str | None:
    """The room of a dotted module name inside ``attn_deploy`` (``None`` outside it)."""
    parts = module.split(".")
    if parts[0] != "attn_deploy":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _is_room(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert node.level == 0, "relative imports are not used in attn_deploy"
    module = node.module or ""
    if (
        module == "attn_deploy"
    ):  # ``from attn_deploy import fsutil`` imports the room fsutil, ``__version__`` the root
        return [f"attn_deploy.{a.name}" if _is_room(a.name) else module for a in node.names]
    return [module]


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(module, line, function_local)`` for each runtime import in ``path``."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub, local)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((name, child.lineno, local) for name in _imported(child))
            is_def = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, local or is_def)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def source_room(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    if rel.name == "__init__.py" and len(rel.parts) == 1:
        return "__init__"
    return rel.parts[0].removesuffix(".py")


def edges() -> list[tuple[str, str, str, bool]]:
    """``(from_room, to_room, "file:line", function_local)`` for every import between rooms."""
    result = []
    for path in sorted(PACKAGE.rglob("*.py")):
        src = source_room(path)
        for module, line, local in imports(path):
            dst = room_of(module)
            if dst is not None and dst != src:
                result.append((src, dst, f"{path.relative_to(PACKAGE)}:{line}", local))
    return result


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of rooms, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_every_room_is_ordered() -> None:
    rooms = {source_room(p) for p in PACKAGE.rglob("*.py")}
    assert rooms == set(ORDER), f"missing from ORDER: {rooms - set(ORDER)}; gone: {set(ORDER) - rooms}"


def test_no_cycles_among_rooms() -> None:
    module_level: dict[str, set[str]] = defaultdict(set)
    every: dict[str, set[str]] = defaultdict(set)
    for src, dst, _, local in edges():
        every[src].add(dst)
        if not local:
            module_level[src].add(dst)
    assert find_cycle(module_level) is None, find_cycle(module_level)
    assert find_cycle(every) is None, f"with function-local imports: {find_cycle(every)}"


def test_imports_go_down() -> None:
    rank = {room: i for i, room in enumerate(ORDER)}
    upward = [f"{where}: {src} -> {dst}" for src, dst, where, _ in edges() if rank[dst] > rank[src]]
    assert not upward, "imports against ORDER:\n" + "\n".join(upward)


def test_function_local_imports_only_for_optional_dependencies() -> None:
    stray = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if source_room(path) in LIGHT_FRONT_ENDS:
            continue
        allowed = ALLOWED_LOCAL.get(rel, set())
        for module, line, local in imports(path):
            if local and module.split(".")[0] not in allowed:
                stray.append(f"{rel}:{line}: import {module}")
    assert not stray, "function-local imports outside commands/ and cli.py:\n" + "\n".join(stray)


def test_only_the_front_ends_display() -> None:
    """The library returns data: no stage room imports the terminal display (the benchmark scripts may)."""
    printing = [f"{where}: {src}" for src, dst, where, _ in edges() if dst == "display"]
    assert printing and all(src in LIGHT_FRONT_ENDS for src in (p.split(": ")[1] for p in printing)), printing


def test_the_checks_see_imports() -> None:
    """The parser finds what it checks: a known edge of each kind (guards against a silently empty graph)."""
    found = {(src, dst, local) for src, dst, _, local in edges()}
    assert ("serve", "artifacts", False) in found
    assert ("workflow", "precision", False) in found
    assert ("commands", "workflow", True) in found
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
