"""A worker process's entry points, called by the fork server in the child it forked.

    run_worker(req)                        # a cold fork: prepare, then run one incarnation
    prepared = prepare_standby(inbound, run_dir)
    run_worker(req, prepared)              # a standby, once activated

Never returns: the process exits with its incarnation's exit code.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from supervisor_tree.spec import error
from supervisor_tree.wire import channel
from supervisor_tree.worker import faults, idempotency
from supervisor_tree.worker.aio_incarnation import AioIncarnation  # preloaded by the fork server, asyncio with it
from supervisor_tree.worker.behaviour import is_async_worker
from supervisor_tree.worker.exits import EXIT_ERROR, exit_status, write_reason
from supervisor_tree.worker.incarnation import Incarnation
from supervisor_tree.worker.output import capture, prepare_capture
from supervisor_tree.worker.spawn import SpawnRequest, check_request, load_target
from supervisor_tree.worker.standby import Prepared, mark, prepare

__all__ = ["run_worker", "prepare_standby", "rehearse"]

log = logging.getLogger("supervisor_tree.worker")


def prepare_standby(inbound: str, run_dir: str) -> Prepared:
    """A standby's preparation: sockets bound under its own names, its log handler made, then a
    rehearsed activation."""
    prepare_capture()
    return prepare(inbound, standby_in=run_dir, rehearse=rehearse)


def rehearse(prepared: Prepared, run_dir: str) -> None:
    req = SpawnRequest(0, ".standby", 0, "supervisor_tree.worker.behaviour:Worker", {}, run_dir, prepared.inbound_endpoint,
                       prepared.mailbox_at, prepared.control_at, 1.0)
    req = pickle.loads(pickle.dumps(req, protocol=channel.PROTOCOL))
    check_request(req)
    rehearsal = _incarnation_for(req)(req, prepared)
    rehearsal.replies = channel.ReplySender(rehearsal.ctx)
    rehearsal.worker = load_target(req.start)()  # type: ignore[operator]
    idempotency.declared(rehearsal.worker)
    faults.before_init(run_dir, req.worker_id)  # no such file: a stat
    rehearsal.stats(reset_window=True)
    channel.encode_notice(rehearsal.key, ("ready", req.worker_id, req.generation, rehearsal.pid))
    rehearsal.key.verify(channel.reply_frame(rehearsal.key, b"\0" * 8, True, None))
    exit_status("normal")


def _incarnation_for(req: SpawnRequest) -> type[Incarnation]:
    """The asyncio loop for a Worker class with an `async def` callback, else the plain loop.

    A target that does not load is left to the plain loop, which reports it as a start failure.
    """
    try:
        target = load_target(req.start)
    except Exception:  # noqa: BLE001 - Incarnation.run imports it again and reports why it fails
        return Incarnation
    return AioIncarnation if is_async_worker(target) else Incarnation


def run_worker(req: SpawnRequest, prepared: Prepared | None = None, go: Callable[[], None] | None = None) -> NoReturn:
    """Run one incarnation in this (freshly forked) process; never returns.

    A child with `command` executes its program instead (`command.exec_command`); a
    Worker whose callbacks are `async def` runs on an event loop (`aio_incarnation`).
    `go`: a standby handed its request ahead of its turn builds its incarnation, then
    waits in `go` for its turn before it runs it: its endpoints, its init and everything
    a sibling could observe come after the go.
    """
    if prepared is None:
        mark("activated")  # a cold fork: forked just now
    if req.command is not None:
        from supervisor_tree.worker.command import exec_command

        exec_command(req, prepared)
    capture(req.output)
    code = EXIT_ERROR
    try:
        incarnation = _incarnation_for(req)(req, prepared)
        if go is not None:
            go()
            incarnation.started = time.monotonic()
        code = incarnation.run()
    except BaseException as exc:
        log.error("worker %s#%s: internal error", req.worker_id, req.generation, exc_info=True)
        write_reason(req.run_dir, error(f"internal: {type(exc).__name__}: {exc}"))
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - closed or broken stream; nothing to do
                pass
        os._exit(code)
