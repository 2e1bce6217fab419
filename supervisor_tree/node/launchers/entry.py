"""What a child of the fork server runs: a worker forked cold, or a standby waiting for its request.

A standby reads its activation socket (the node's other end, `local.LocalLauncher`):
a request (length, then the pickled `SpawnRequest`) activates it at once; a zero
length first means "ahead of its turn" (`LocalLauncher.prepare`): it builds its
incarnation, then waits for one byte, GO, before it takes its title, binds its
endpoints and runs init.  EOF at either wait: it exits, unreported.

    standby_main(r, w, inbound, cfg)     # in the forked standby; never returns
    cold_main(req, name)                 # in a process forked for one request
"""

from __future__ import annotations

import logging
import os
import struct
import sys
from typing import NoReturn

from supervisor_tree.node.launchers import osproc, pipe
from supervisor_tree.node.launchers.pipe import ServerConfig
from supervisor_tree.wire.shapes import BadFrame
from supervisor_tree.worker.spawn import SpawnRequest

log = logging.getLogger("supervisor_tree.node.launchers.forkserver")

__all__ = ["LEN", "GO", "cold_main", "standby_main", "read_exactly"]

LEN = struct.Struct("<I")
GO = b"\x01"  # a standby prepared ahead: now run (LocalLauncher.spawn of its token)


def _become(req: SpawnRequest, name: str, title: bool = True, score: int | None = None) -> None:
    """Take the worker's title and OOM score (a warning in its log when the score cannot be set).
    `score`: the one this process is known to have already (a standby's: no /proc read then)."""
    if title:
        osproc.set_title(name, f"{req.worker_id}#{req.generation}")
    if req.oom_score_adj is None or req.oom_score_adj == score:
        return
    if problem := osproc.set_oom_score_adj(req.oom_score_adj):
        log.warning("worker %s#%s: %s", req.worker_id, req.generation, problem)


def cold_main(req: SpawnRequest, name: str) -> NoReturn:
    from supervisor_tree.worker import main as worker

    _become(req, name, title=False)  # titled when forked
    sys.path[:0] = list(req.sys_path)
    worker.run_worker(req)


def standby_main(r: int, w: int, inbound: str, cfg: ServerConfig) -> NoReturn:
    """Make the context and connect to the node, then wait for the request that activates us."""
    from supervisor_tree.worker import main as worker

    os.close(w)
    # Raising it needs no privilege; if it failed, a worker's own score is set (or reported) at activation.
    score = cfg.standby_oom_score_adj if osproc.set_oom_score_adj(cfg.standby_oom_score_adj) is None else None
    prepared = worker.prepare_standby(inbound, cfg.run_dir)
    req, ahead = _read_request(r)
    if not ahead:
        os.close(r)
        _become(req, cfg.name, score=score)
        sys.path[:0] = list(req.sys_path)
        worker.run_worker(req, prepared)
    sys.path[:0] = list(req.sys_path)

    def go() -> None:
        """Prepared ahead of its turn (LocalLauncher.prepare): wait for GO; EOF: it will not come."""
        from supervisor_tree.worker import standby

        got = os.read(r, 1)
        standby.mark("activated")
        os.close(r)
        if got != GO:
            os._exit(0 if not got else 1)
        _become(req, cfg.name, score=score)

    worker.run_worker(req, prepared, go=go)


def _read_request(r: int) -> tuple[SpawnRequest, bool]:
    """The next request on the activation socket, and whether it came ahead of its turn (a zero
    length first).  EOF: the node closed it (never activated, or a start prepared ahead that
    will not come), so exit unreported."""
    from supervisor_tree.worker import standby

    head = read_exactly(r, LEN.size)
    ahead = head is not None and LEN.unpack(head)[0] == 0
    if ahead:
        head = read_exactly(r, LEN.size)
    data = None if head is None else read_exactly(r, LEN.unpack(head)[0])
    standby.mark("prepared" if ahead else "activated")
    if data is None:
        os._exit(0)
    try:
        return pipe.decode_spawn_request(data), ahead
    except BadFrame as exc:  # only the node writes here; a bug, not an attack: say so and go
        log.error("standby %d: activated with a bad request (%s); exiting", os.getpid(), exc.reason)
        os._exit(1)


def read_exactly(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
