"""The house's rules, checked on the code itself: no import circles, modules a reader can hold,
typed components, one top-level package.

The layer contracts themselves (otp imports only spec, the client never the node, ...)
are import-linter's, in pyproject.toml, run by `make test` as `lint-imports`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import grimp

import supervisor_tree

PACKAGE = Path(supervisor_tree.__file__).resolve().parent
REPO = PACKAGE.parent
MAX_LINES = 450  # STYLE.md: modules under ~400 lines; past ~600, split along a seam


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_circles_among_modules() -> None:
    graph = grimp.build_graph("supervisor_tree")  # includes the components: supervisor_tree.workers
    assert "supervisor_tree.workers.registry" in graph.modules
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b"]]


def test_every_module_is_under_the_size_a_reader_holds() -> None:
    too_long = {
        str(path.relative_to(REPO)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert too_long == {}, f"split these along a seam (STYLE.md): {too_long}"


def test_the_components_need_no_type_ignore() -> None:
    ignores = [
        f"{path.relative_to(REPO)}:{i}"
        for path in (REPO / "workers").rglob("*.py")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"#\s*type:\s*ignore", line)
    ]
    assert ignores == []


def test_the_wheel_has_one_top_level_package(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("supervisor_tree-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"supervisor_tree"}
    assert "supervisor_tree/workers/registry.py" in names  # the components, inside the package
    assert "supervisor_tree/config/default.toml" in names  # the default tree travels with it


def test_outside_the_repository_workers_is_not_ours() -> None:
    probe = subprocess.run([sys.executable, "-c", "import workers"], cwd="/", capture_output=True, text=True)
    assert "No module named 'workers'" in probe.stderr


def test_every_spawn_request_field_has_a_checked_type() -> None:
    """A field added to SpawnRequest without its type in the check would fail every spawn."""
    import dataclasses

    from supervisor_tree.worker import spawn

    assert set(spawn._FIELD_TYPES) == {f.name for f in dataclasses.fields(spawn.SpawnRequest)}
