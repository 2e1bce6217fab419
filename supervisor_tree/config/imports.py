"""What `check` learns by importing: whether a child's `start` names something that can be started.

    target_problem("myapp.counter:Counter", config_dir)   # None, or one line saying why not
    current_name("workers.queue:Queue", where, config_dir)  # "supervisor_tree.workers.queue:Queue"

Imports as the fork server will (the config's directory first on sys.path) and
reports a module that raises on import as a problem, never as a crash.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["current_name", "target_problem", "module_problem", "config_dir_first_on_path"]


def current_name(start: str, where: str, config_dir: str | None) -> str:
    """A built-in component's old top-level name (`workers.queue:Queue`) -> its name now.

    The built-in components live in `supervisor_tree.workers`; the top-level name
    `workers` belongs to the user's own package, if there is one.  An old name is
    taken as ours (with a FutureWarning) only when no `workers` module of the
    user's provides it, so a user's `workers.jobs` keeps its meaning.
    """
    module_name = start.partition(":")[0]
    if not module_name.startswith("workers."):
        return start
    ours = _find_spec("supervisor_tree." + module_name, None)
    if ours is None:
        return start
    theirs = _find_spec(module_name, config_dir)
    if theirs is not None and _origin(theirs) != _origin(ours):
        return start
    warnings.warn(
        f'{where}: start "{start}" is the old name of a built-in component; '
        f'write "supervisor_tree.{start}" (the old name will stop working)',
        FutureWarning,
        stacklevel=2,
    )
    return "supervisor_tree." + start

def target_problem(target: str, config_dir: str | None) -> str | None:
    """Why "module:Class" cannot be started here, or None when it imports and is callable."""
    module_name, _, attr_path = target.partition(":")
    problem = module_problem(module_name, config_dir)
    if problem:
        return problem
    obj: object = sys.modules[module_name]
    where = module_name
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            return f'module {module_name} has no attribute "{attr}"' if where == module_name \
                else f'{where} has no attribute "{attr}"'  # fmt: skip
        obj, where = getattr(obj, attr), f"{where}.{attr}"
    if not callable(obj):
        return f"{where} is not a class or callable; it is a {type(obj).__name__}"
    return None

def module_problem(module_name: str, config_dir: str | None) -> str | None:
    with config_dir_first_on_path(config_dir):
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            return f'cannot import module "{module_name}": {_one_line(exc)}'
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's module ran and raised: report, don't crash
            return f'cannot import module "{module_name}": importing it raised {type(exc).__name__}: {_one_line(exc)}'
    return None


def _find_spec(module_name: str, config_dir: str | None) -> importlib.machinery.ModuleSpec | None:
    """The module's spec as the fork server would find it, or None (also when a parent fails to import)."""
    with config_dir_first_on_path(config_dir):
        try:
            return importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            return None
        except Exception:  # noqa: BLE001 - a parent package of the user's raised on import: not ours either
            return None


def _origin(spec: importlib.machinery.ModuleSpec) -> str | None:
    return os.path.realpath(spec.origin) if spec.origin else None


@contextmanager
def config_dir_first_on_path(config_dir: str | None) -> Iterator[None]:
    """Import as the fork server will: the config's directory first on sys.path."""
    saved = list(sys.path)
    if config_dir is not None:
        sys.path.insert(0, config_dir)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = saved


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or "(no message)"
