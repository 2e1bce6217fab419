"""The node's side of the standbys: activation sockets at hand, handed requests, held ones.

A mixin of `local.LocalLauncher`, which owns the state it uses.  A standby is a
pre-forked process waiting on an activation socket (forkserver.py forks it, entry.py
runs in it); the node writes a request into that socket (`_activate`: it starts at
once), or hands it ahead of its turn (`prepare`: it builds its incarnation, then waits
for its go, which `spawn` sends).  A standby never activated is never reported.
"""

from __future__ import annotations

import collections
import os
import pickle
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from supervisor_tree.node.launchers.base import CodeSnapshots, Event, Spawned
from supervisor_tree.node.launchers.entry import LEN
from supervisor_tree.node.launchers.orphans import remove_standby_files
from supervisor_tree.worker.spawn import SpawnRequest

if TYPE_CHECKING:
    from supervisor_tree.node.launchers.reaper import Reaper
    from supervisor_tree.node.launchers.server import ServerProcess

__all__ = ["StandbyHandoff", "dumps_request"]


class StandbyHandoff:
    """Standbys at hand and standbys handed a request ahead of its turn.  See the module docstring."""

    run_dir: str
    code: CodeSnapshots
    _standbys: collections.deque[tuple[int, int]]  # (pid, activation socket fd)
    _held: dict[int, tuple[int, int]]  # token -> (pid, fd) of a standby prepared ahead

    # LocalLauncher's, declared without a body: nothing here can shadow them.
    _require_reaper: Callable[[], Reaper]
    _post: Callable[[Event], None]
    _send: Callable[[tuple[object, ...]], None]
    _tidy_up: Callable[[], None]

    @property
    def standbys_at_hand(self) -> int:
        """How many standbys the next spawns can activate (announced in read_events)."""
        return len(self._standbys)

    @property
    def standby_pids(self) -> list[int]:
        return [pid for pid, _ in self._standbys]

    def _take_standby(self, server: ServerProcess, pid: int) -> None:
        _, fds, _, _ = socket.recv_fds(server.sock, 1, 1)
        os.set_inheritable(fds[0], False)
        self._require_reaper().watch(pid)
        if self.code.refreshing:  # forked with the old code: closing its activation socket makes it exit
            os.close(fds[0])
        else:
            self._standbys.append((pid, fds[0]))

    def _activate(self, pid: int, fd: int, req: SpawnRequest, frame: bytes) -> bool:
        """Write `frame` (the request, or GO) into a standby's activation socket (closed after);
        False: it died meanwhile."""
        try:
            with socket.socket(fileno=fd) as activation:
                activation.sendall(frame, socket.MSG_NOSIGNAL)
        except OSError:  # it died while waiting: its pidfd reaps it (never reported)
            return False
        self._require_reaper().activated(pid, req)
        self._post(Spawned(req.token, pid))
        self._send(("activated", pid))
        self._tidy_up()
        return True

    def prepare(self, req: SpawnRequest) -> bool:
        """Hand `req` to a standby ahead of its turn; False when none is at hand.

        The standby builds its incarnation (the request read, the worker's module loaded, its
        output on `req.output`) and waits: it takes its title, binds its endpoints and runs
        init only once `spawn(req)` (same token) sends it GO.  Until then it is nobody's worker:
        `discard(token)` (or the node's end) makes it exit unreported.  The fork server is
        told it is gone at its go, so it does not refill its standbys during a group restart.
        """
        if req.command is not None or req.token in self._held:
            return False
        data = dumps_request(req)
        while self._standbys:
            pid, fd = self._standbys.popleft()
            activation = socket.socket(fileno=fd)
            try:  # a zero length first: "ahead of its turn" (forkserver._standby_main)
                activation.sendall(LEN.pack(0) + LEN.pack(len(data)) + data, socket.MSG_NOSIGNAL)
            except OSError:
                activation.close()
                self._send(("discard", pid))
                continue
            finally:
                activation.detach()  # a no-op once closed; else the fd stays ours, held until the go
            self._held[req.token] = (pid, fd)
            return True
        return False

    def discard(self, token: int) -> None:
        """A start prepared ahead that will not come (its plan changed): the standby exits, unreported."""
        held = self._held.pop(token, None)
        if held is not None:
            os.close(held[1])  # it reads EOF and exits; reaped here as a standby
            self._send(("activated", held[0]))  # not a standby of the fork server's any more

    def _standby_gone(self, pid: int) -> None:
        for i, (spid, fd) in enumerate(self._standbys):
            if spid == pid:
                del self._standbys[i]
                os.close(fd)
                self._send(("discard", pid))
                break
        remove_standby_files(self.run_dir, pid)


def dumps_request(req: SpawnRequest) -> bytes:
    try:
        return pickle.dumps(req, protocol=5)
    except Exception:  # noqa: BLE001 - args holding closures: cloudpickle can ship them
        import cloudpickle

        data: bytes = cloudpickle.dumps(req, protocol=5)
        return data
