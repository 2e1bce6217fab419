"""Which module files a process runs, and their hashes: what `supervise reload --code` compares.

A file counts when it is under one of the *code roots*: the config's directory
(the worker's sys_path), the directories on PYTHONPATH, and the supervisor_tree
package itself (with its built-in workers); installed packages (site-packages)
and the standard library inside a root do not count.  The hash is blake2b-128 of
the file's bytes.

The fork server takes a snapshot once it has imported what it preloads
(`remember`); every process it forks inherits that snapshot in memory
(`INHERITED`), and a wrapped import finder (`record_imports`) that hashes each
project module as it is imported, so a worker knows the files it imported itself
as they were when it loaded them (`own_files`: usually none in init, its modules
came with the fork; a task module it imports later is one).  Asked
for its code record (control op "code"), a worker names the files its code
reaches (`closure`: from its start target and the worker machinery, following the
modules and classes each module's globals refer to) and gives `record`: the
snapshot's epoch, the inherited files it reaches, and its own files' hashes.  The
node looks the inherited hashes up in the snapshots the fork server sent it and
compares everything with the files on disk.  A module the fork server holds but
this worker's code never reaches (the CLI's, another worker's) is not in its record.

    >>> roots = code_roots(())
    >>> any(f.endswith("supervisor_tree/spec.py") for f in loaded_files(roots))
    True
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import os
import sys
import sysconfig
import types
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["INHERITED", "MISSING", "code_roots", "counts", "loaded_files", "file_hash", "snapshot", "remember",
           "record_imports", "own_files", "closure", "record"]

INHERITED: tuple[int, frozenset[str]] = (0, frozenset())
"""(epoch, files) of the fork server's snapshot this process was forked with; epoch 0: none."""

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../supervisor_tree
MISSING = "missing"


def code_roots(sys_path: Iterable[str]) -> tuple[str, ...]:
    """The directories whose modules count as the project's code (each ends with "/")."""
    return _roots(tuple(sys_path), os.environ.get("PYTHONPATH", ""))


@functools.lru_cache(maxsize=8)  # filled in the fork server, so its forks find it ready
def _roots(sys_path: tuple[str, ...], pythonpath: str) -> tuple[str, ...]:
    candidates = [*sys_path, *pythonpath.split(os.pathsep), _PACKAGE]
    roots: list[str] = []
    for path in candidates:
        if not path:
            continue
        for form in (os.path.abspath(path), os.path.realpath(path)):
            root = form.rstrip("/") + "/"
            if root != "/" and root not in roots:
                roots.append(root)
    return tuple(roots)


def _excluded() -> tuple[str, ...]:
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    paths = {sysconfig.get_paths().get(n) for n in names} | {os.path.join(sys.prefix, "lib")}
    return tuple(sorted(p.rstrip("/") + "/" for p in paths if p))


_EXCLUDED = _excluded()


def counts(path: str, roots: Sequence[str]) -> bool:
    """Whether the module file `path` is the project's: under a root, not in an installed tree inside it."""
    root = max((r for r in roots if path.startswith(r)), key=len, default=None)
    if root is None:
        return False
    return not any(e.startswith(root) and path.startswith(e) for e in _EXCLUDED)


def loaded_files(roots: Sequence[str]) -> list[str]:
    """The source files of the modules this process has imported that count, sorted."""
    prefixes = tuple(roots)
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path.startswith(prefixes) or not path.endswith(".py"):
            continue
        if counts(path, roots):
            files.add(path)
    return sorted(files)


def file_hash(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.blake2b(f.read(), digest_size=16).hexdigest()
    except OSError:
        return MISSING


def snapshot(roots: Sequence[str]) -> dict[str, str]:
    """{file: hash} of every file that counts among this process's modules."""
    return {path: file_hash(path) for path in loaded_files(roots)}


def remember(epoch: int, files: Iterable[str]) -> None:
    """The fork server's snapshot, for the processes it forks from now on."""
    global INHERITED
    INHERITED = (epoch, frozenset(files))


class _Recorder:
    """sys.meta_path's PathFinder, wrapped: a project module found for import is hashed there and
    then, so a worker's own imports (in init, or later: a task module) are known as they were loaded."""

    def __init__(self, finder: Any, roots: Sequence[str]) -> None:
        self.finder, self.roots, self.prefixes = finder, tuple(roots), tuple(roots)
        self.files: dict[str, str] = {}

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        spec = self.finder.find_spec(name, path, target)
        origin = getattr(spec, "origin", None)
        if isinstance(origin, str) and origin.startswith(self.prefixes) and origin.endswith(".py") \
                and counts(origin, self.roots):  # fmt: skip
            self.files[origin] = file_hash(origin)
        return spec

    def invalidate_caches(self) -> None:
        self.finder.invalidate_caches()

    def __getattr__(self, name: str) -> Any:  # find_distributions (importlib.metadata), ...: the finder's own
        return getattr(self.finder, name)


_recorder: _Recorder | None = None


def record_imports(roots: Sequence[str]) -> None:
    """From now on, hash each project module this process (and what it forks) imports."""
    global _recorder
    if _recorder is None:
        at = next((i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder), None)
        if at is None:
            return  # an exotic import system: own imports go unrecorded (the inherited ones still count)
        _recorder = _Recorder(importlib.machinery.PathFinder, roots)
        sys.meta_path[at] = _recorder
    _recorder.roots = _recorder.prefixes = tuple(roots)
    _recorder.files = {}


def own_files() -> dict[str, str]:
    """{file: hash} of the project's modules this process imported since `record_imports` (the fork)."""
    return dict(_recorder.files) if _recorder is not None else {}


MACHINERY = ("supervisor_tree.worker.main", "supervisor_tree.worker.incarnation")


def closure(seeds: Iterable[str], roots: Sequence[str]) -> set[str]:
    """The project's files reachable from the modules `seeds`: each module's file, its parent
    packages, and the modules its globals (modules, classes and their bases, functions) come from."""
    todo, seen, files = list(seeds), set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if module is None or not isinstance(path, str) or not counts(path, roots):
            continue  # outside the project: not followed
        files.add(path)
        if "." in name:
            todo.append(name.rpartition(".")[0])
        for value in list(vars(module).values()):
            todo.extend(_modules_of(value))
    return files


def _modules_of(value: object) -> list[str]:
    if isinstance(value, types.ModuleType):
        return [value.__name__]
    try:
        if isinstance(value, type):
            return [base.__module__ for base in value.__mro__]
        name = getattr(value, "__module__", None)
    except Exception:  # noqa: BLE001 - an object whose attribute lookup raises: nothing to follow
        return []
    return [name] if isinstance(name, str) else []


def record(target: object, roots: Sequence[str], generation: int) -> dict[str, object]:
    """A worker's code record: what `supervise reload --code` compares with the disk."""
    seeds = [*MACHINERY, *(c.__module__ for c in type(target).__mro__)]
    epoch, inherited = INHERITED
    own = own_files()
    return {"generation": generation, "epoch": epoch, "inherited": sorted(closure(seeds, roots) & inherited), "own": own}
