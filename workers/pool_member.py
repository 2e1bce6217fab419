"""A pooled worker process (poolboy's worker), and the tasks it can run by name.

Owns running the jobs the pool manager hands it (one, or a batch in order when tasks
outnumber free members) and telling it the outcome, and the table of built-in tasks.  Subclass `PoolMember` to give members state (a
connection...) and ops of your own for callers that check a member out.

    # a task is "module:function" (imported in the member) or a built-in name:
    register_task("double", lambda x: 2 * x)   # at import time of a module the members preload

Built-ins: echo(x), sleep(seconds), pid(), raise(message), exit(code) (the
process exits at once: for tests of crashes), kill() (SIGKILL of itself).
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from supervisor_tree.workers._component import Component, Refused

__all__ = ["PoolMember", "TaskFailed", "PoolTimeout", "Job", "register_task", "find_task", "TASKS"]

HOLD_S = 1e-3  # a batch's answers are held at most this long (then sent), so a slow task delays no earlier answer

Job = tuple[int, int, str, Any, bool, Any, "float | None"]
"""(ticket, chunk, task, args, many, caller token or None, deadline or None): one job of a batch (workers/pool.py)."""


class TaskFailed(Refused):
    """The task raised (the member lives on), or names nothing that can run."""


class PoolTimeout(Refused):
    """No member was free within the request's timeout."""


def _echo(*args: Any) -> Any:
    return args[0] if len(args) == 1 else list(args)


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _raise(message: str = "task failed on purpose") -> None:
    raise RuntimeError(message)


def _exit(code: int = 1) -> None:
    os._exit(code)


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


TASKS: dict[str, Callable[..., Any]] = {
    "echo": _echo, "sleep": _sleep, "pid": os.getpid, "raise": _raise, "exit": _exit, "kill": _kill,
}
_resolved: dict[str, Callable[..., Any]] = {}


def register_task(name: str, fn: Callable[..., Any]) -> None:
    """Make `fn` runnable as `name` in processes that import the registering module."""
    if ":" in name:
        raise ValueError(f"a registered task name has no ':' (that form is module:function); got {name!r}")
    TASKS[name] = fn


def find_task(task: str) -> Callable[..., Any]:
    """The callable for a task name: a built-in/registered name, or "module:function"."""
    fn = TASKS.get(task) or _resolved.get(task)
    if fn is not None:
        return fn
    module, sep, qualname = str(task).partition(":")
    if not sep:
        raise TaskFailed(f"unknown task {task!r}: not a built-in ({', '.join(sorted(TASKS))}) "
                         "and not of the form module:function")
    try:
        obj: object = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise TaskFailed(f"task {task!r} does not resolve: {type(exc).__name__}: {exc}") from None
    if not callable(obj):
        raise TaskFailed(f"task {task!r} is a {type(obj).__name__}, not a function")
    _resolved[task] = obj
    return obj


class PoolMember(Component):
    """One pooled process.  Started by the pool manager through the members'
    simple_one_for_one supervisor, with `manager` (the manager's id) in its args.

    Ops: jobs([...]) (cast from the manager: run and report), run(task, args=[])
    (a call from whoever checked this member out), info().
    """

    def init(self, manager: str = "pool", **args: Any) -> None:
        self.manager = manager
        self.args = args
        self.jobs = 0

    def op_jobs(self, jobs: list[Job]) -> None:
        """Run a batch of jobs in order.  A job with a `caller` is answered to it directly (OTP's
        gen_server:reply from another process), the answers to one caller together (`reply_many`);
        the others' values go to the manager.  One "done" tells the manager the outcome and that we
        are free.  A job still waiting here at its deadline is answered PoolTimeout, not run."""
        done: list[tuple[int, int, bool, Any]] = []
        answers: list[tuple[Any, bool, object]] = []
        clock = time.monotonic
        started = held_since = clock()
        for i, (ticket, chunk, task, args, many, caller, deadline) in enumerate(jobs):
            self.jobs += 1
            now = clock() if i else started
            if i and caller is not None and deadline is not None and deadline <= now:
                answers.append((caller, False, PoolTimeout(  # it waited behind this batch's earlier jobs too long
                    f"pool member {self.id!r}: no member free in time (task {task!r} waited behind {i} earlier "
                    "task(s) of its batch); raise size or the timeout")))
                continue
            try:
                fn = find_task(task)
                ok, value = True, [fn(*a) for a in args] if many else fn(*args)
            except Exception as exc:  # noqa: BLE001 - the task's failure is its caller's answer, not our crash
                ok, value = False, f"{type(exc).__name__}: {exc}"
            if caller is None:
                done.append((ticket, chunk, ok, value))
                continue
            if answers and now - held_since > HOLD_S:  # a slow batch: what is held leaves before the next task
                self.reply_many(answers)
                answers = []
            if not answers:
                held_since = now
            answers.append((caller, True, value) if ok else (caller, False, TaskFailed(f"task {task!r} raised {value}")))
        # "done" first: the caller's next request, sent after our answer, then most likely
        # finds the manager knowing that we are free (no needless overflow member).
        self.cast(self.manager, ("done", self.id, self.generation, done, clock() - started, len(jobs)))
        if answers:
            self.reply_many(answers)

    def op_run(self, task: str, args: Any = ()) -> Any:
        self.jobs += 1
        fn = find_task(task)
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - answered as an error; the member lives on
            raise TaskFailed(f"task {task!r} raised {type(exc).__name__}: {exc}") from None

    def op_info(self) -> dict[str, Any]:
        return {"id": self.id, "generation": self.generation, "pid": os.getpid(), "manager": self.manager,
                "jobs": self.jobs, "args": self.args}
