"""The dynamic API and the tree's state as control requests: `ControlOps`, mixed into `Client`.

Owns nothing but the shape of each request (op name, arguments, how long to wait):
OTP's start_child, terminate_child, restart_child, delete_child, which_children,
count_children, plus status, kill, stop and reloads (config and code).  The request itself is `Client.control`'s.

    client.start_child("root", {"id": "w2", "start": "myapp.counter:Counter"})
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from supervisor_tree.client.errors import ControlRefused

__all__ = ["ControlOps"]


class ControlOps(abc.ABC):
    """The node's control operations, each one `control` request (JSON both ways)."""

    @abc.abstractmethod
    def control(self, op: str, _wait: float | None = None, **args: object) -> Any:
        """One control request: the node's answer (`Client.control`)."""

    @abc.abstractmethod
    def control_worker(self, worker_id: str, op: str, kwargs: dict[str, object], timeout: float = 10.0) -> Any:
        """A control operation served by the worker itself (`Client.control_worker`)."""

    def status(self, rss: bool = True) -> dict[str, Any]:
        """The tree as the node sees it; `rss=False`: without each worker's RSS (cheaper for the node)."""
        return self.control("status", rss=rss)  # type: ignore[no-any-return]

    def wait_started(self, timeout: float = 30.0) -> None:
        self.control("wait_started", timeout + 1, timeout=timeout)

    def which_children(self, supervisor: str = "root") -> list[dict[str, Any]]:
        return self.control("which_children", supervisor=supervisor)  # type: ignore[no-any-return]

    def count_children(self, supervisor: str = "root") -> dict[str, int]:
        return self.control("count_children", supervisor=supervisor)  # type: ignore[no-any-return]

    def start_child(self, supervisor: str, spec: dict[str, object] | None = None, args: dict[str, object] | None = None,
                    timeout: float = 60.0) -> dict[str, Any]:
        """OTP's start_child: `spec` as the config writes a child ({"id": ..., "start": "mod:Class", ...}), or, for a
        simple_one_for_one supervisor, `args` added to its template's (both JSON: the control protocol's)."""
        return self.control("start_child", timeout, supervisor=supervisor, spec=spec, args=args)  # type: ignore[no-any-return]

    def terminate_child(self, target: str | int, supervisor: str | None = None, timeout: float = 120.0) -> dict[str, Any]:
        return self.control("terminate_child", timeout, target=target, supervisor=supervisor)  # type: ignore[no-any-return]

    def restart_child(self, child: str, supervisor: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        return self.control("restart_child", timeout, target=child, supervisor=supervisor)  # type: ignore[no-any-return]

    def delete_child(self, child: str, supervisor: str | None = None) -> dict[str, Any]:
        return self.control("delete_child", target=child, supervisor=supervisor)  # type: ignore[no-any-return]

    def kill(self, worker_id: str, sig: str = "KILL") -> dict[str, Any]:
        return self.control("kill", id=worker_id, signal=sig)  # type: ignore[no-any-return]

    def stop(self, timeout: float = 600.0) -> dict[str, Any]:
        return self.control("stop", timeout)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ reload

    def reload(self, config: str | None = None, *, dry_run: bool = False, checked: bool = False,
               timeout: float = 600.0) -> dict[str, Any]:
        """Apply `config` (None: the node's own) to the running tree, touching only what changed.

        Returns the plan and, unless `dry_run`, the outcome (`{"ok": False, "problems": [...]}`
        when the config has a problem: then nothing changed).  `checked`: the caller already
        imported what the config names (else the node runs `supervise check` first)."""
        return self.control("reload", timeout, path=config, dry_run=dry_run, checked=checked)  # type: ignore[no-any-return]

    def reload_code(self, workers: Sequence[str] = (), *, dry_run: bool = False, timeout: float = 600.0) -> dict[str, Any]:
        """Restart, one at a time, the running workers (ids or globs; none: all) whose code changed on disk."""
        from supervisor_tree.client.reload import code_records

        records, unmatched = code_records(self, workers)
        if unmatched:
            raise ControlRefused(f"no running worker matches {', '.join(map(repr, unmatched))}")
        return self.control("reload_code", timeout, records=records, dry_run=dry_run)  # type: ignore[no-any-return]
