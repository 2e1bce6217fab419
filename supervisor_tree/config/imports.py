"""What `check` learns by importing: whether a child's `start` names something that can be started.

    target_problem("myapp.counter:Counter", config_dir)   # None, or one line saying why not
    args_problem("myapp.counter:Counter", {"strat": 1}, config_dir, template=False)
    # 'args: init of myapp.counter:Counter takes no "strat" (did you mean "start"?); it takes: start'
    current_name("workers.queue:Queue", where, config_dir)  # "supervisor_tree.workers.queue:Queue"

`start` must name a Worker subclass, or a factory: a callable that takes no arguments
(and, when annotated, returns a Worker).  `args` must fit the Worker's `init`: no
name it does not take (unless it takes **kwargs), every argument without a default
given (except under simple_one_for_one, where start_child may add them).

Imports as the fork server will (the config's directory first on sys.path) and
reports a module that raises on import as a problem, never as a crash.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import typing
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["current_name", "target_problem", "args_problem", "module_problem", "config_dir_first_on_path"]


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
    return _startable_problem(obj, where)


def _worker_class() -> type[Any]:
    from supervisor_tree.worker.behaviour import Worker  # the class `start` must name (or return)

    return Worker


def _startable_problem(obj: object, where: str) -> str | None:
    """Why `obj` is neither a Worker subclass nor a factory of Workers, as far as its signature shows."""
    worker = _worker_class()
    if isinstance(obj, type):
        if issubclass(obj, worker):
            return None
        return (f"{where} is a class but not a Worker subclass; subclass supervisor_tree.Worker "
                "(or name a function that returns a Worker)")  # fmt: skip
    if inspect.isbuiltin(obj):  # C code: it cannot make a Worker
        return f"{where} is a builtin function, not a Worker subclass nor a factory of Workers"
    try:
        signature = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None  # no signature to read: start will tell
    try:
        signature.bind()
    except TypeError:
        return (f"{where} is not a Worker subclass, nor a factory (a callable taking no arguments): "
                f"it takes {signature}")  # fmt: skip
    try:
        returns = typing.get_type_hints(obj).get("return")
    except Exception:  # noqa: BLE001 - annotations that do not resolve tell us nothing
        return None
    if isinstance(returns, type) and not issubclass(returns, worker):
        return f"{where} is a factory that returns {returns.__name__}, not a Worker"
    return None


def args_problem(target: str, args: Mapping[str, object], config_dir: str | None, *, template: bool) -> str | None:
    """Why `args` do not fit the `init` of the Worker that `target` names (after `target_problem` passed).

    `template`: the child of a simple_one_for_one supervisor, whose start_child may add
    the arguments still missing."""
    module_name, _, attr_path = target.partition(":")
    with config_dir_first_on_path(config_dir):
        obj: object = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    worker = _worker_class()
    if not (isinstance(obj, type) and issubclass(obj, worker)):
        return None  # a factory: what it returns is known only at start
    init = next(vars(c)["init"] for c in obj.__mro__ if "init" in vars(c))  # the function, not a bound method
    try:
        params = list(inspect.signature(init).parameters.values())[1:]  # without self
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        known = None
    else:
        known = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    problems = []
    for name in args if known is not None else ():
        if name not in known:  # type: ignore[operator]
            close = difflib.get_close_matches(name, known or [], n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            problems.append(f'takes no "{name}"{hint}; it takes: {", ".join(known or []) or "nothing"}')
    missing = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.name not in args]  # fmt: skip
    if missing and not template:
        needed = ", ".join(f'"{m}"' for m in missing)
        problems.append(f"needs {needed} (no default): add to args")
    return f"args: init of {target} " + "; ".join(problems) if problems else None

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
