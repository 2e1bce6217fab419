"""The fork server's fresh start in place: forget the project's modules, import them again from disk.

Runs inside the fork server (forkserver.py calls it on the node's ("refresh", ...)
request, for `supervise reload --code`).  Every module whose file is the project's
code (worker/code.py: the config's directory, PYTHONPATH, supervisor_tree) is
dropped from sys.modules, then the same modules, the preload list and the
modules the node names (the start targets of the workers about to restart) are
imported again, so that nothing forked afterwards runs the old code.  Modules
elsewhere (the standard library, installed packages) stay.

The fork server's own modules stay too (`own_files`: what forkserver.py reaches:
spec, the launcher's events, ...): it keeps running them, and what it pickles to
the node must be of the classes its sys.modules names.  A changed file among
them cannot reach a forked worker without a new fork server, so the node refuses
a code reload that needs one (node/reload_ops.py) rather than restart a worker
on the old code.

    problems = reimport(code_roots(sys_path), preload=("app.workers",), also=("app.jobs",))
    files, own = take_snapshot(sys_path, epoch=2)   # the new snapshot its forks inherit
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Sequence

__all__ = ["reimport", "take_snapshot", "own_files"]

_ALWAYS = ("zmq", "supervisor_tree.worker.main")  # what the fork server imports at its start


def reimport(roots: Sequence[str], preload: Iterable[str], also: Iterable[str] = ()) -> list[str]:
    """Drop the project's modules and import them (and `preload`, `also`) again; one line per failure."""
    from supervisor_tree.worker.code import counts

    own = own_files(roots)
    dropped = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and not name.startswith("__") and path not in own and counts(path, roots):
            dropped.append(name)
            del sys.modules[name]
    importlib.invalidate_caches()
    problems = []
    wanted = dict.fromkeys([*preload, *also, *sorted(dropped), *_ALWAYS])  # ordered, once each
    for name in wanted:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - the user's module raised: reported to the node
            if name in dropped and name not in preload and name not in also:
                continue  # a module that went away or no longer imports alone; the workers that need it will say so
            problems.append(f'module "{name}": {type(exc).__name__}: {" ".join(str(exc).split())}')
    return problems


def own_files(roots: Sequence[str]) -> set[str]:
    """The project's files the fork server itself runs (never dropped)."""
    from supervisor_tree.worker.code import closure

    return closure([__name__.rpartition(".")[0] + ".forkserver"], roots)


def take_snapshot(sys_path: Sequence[str], epoch: int) -> tuple[dict[str, str], list[str]]:
    """Hash the project's files this process holds and remember them as what its forks inherit;
    (those {file: hash}, the files among them the fork server itself runs)."""
    code = importlib.import_module("supervisor_tree.worker.code")  # the module as it is now (it may be new)
    roots = code.code_roots(sys_path)
    files: dict[str, str] = code.snapshot(roots)
    code.remember(epoch, files)
    code.record_imports(roots)  # what its forks import themselves, hashed as they import it
    return files, sorted(own_files(roots))
