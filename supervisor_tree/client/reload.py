"""What a client gathers for `reload --code`: the code record of each running worker it names.

    records, unmatched = code_records(client, ["pool_member-*", "queue"])
    client.control("reload_code", records=records)

A worker answers its own control op "code" (worker/code.py): the files its code
reaches and the hashes they had when it started.  The node compares them with the
disk; the client only asks, since the node never talks to a worker's sockets.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from supervisor_tree.client.errors import ClientError

__all__ = ["running_workers", "code_records"]


class _Client(Protocol):
    def status(self) -> dict[str, Any]: ...
    def control_worker(self, worker_id: str, op: str, kwargs: dict[str, object], timeout: float = 10.0) -> Any: ...


def running_workers(tree: Mapping[str, Any] | None) -> Iterator[str]:
    """The ids (keys, for simple_one_for_one instances) of the running workers of a status tree."""
    for child in (tree or {}).get("children", ()):
        if "supervisor" in child:
            yield from running_workers(child["supervisor"])
        elif child.get("type") == "worker" and child.get("state") == "running":
            yield str(child["key"])


def code_records(client: _Client, patterns: Sequence[str] = (), timeout: float = 5.0) -> tuple[dict[str, object], list[str]]:
    """({worker id: its code record, or {"error": why}}, the patterns that matched no running worker).

    No pattern: every running worker.  A pattern is a worker id or a glob ("pool_member-*")."""
    ids = list(running_workers(client.status().get("tree")))
    unmatched = [p for p in patterns if not fnmatch.filter(ids, p)]
    chosen = [i for i in ids if not patterns or any(fnmatch.fnmatchcase(i, p) for p in patterns)]
    records: dict[str, object] = {}
    for worker_id in chosen:
        try:
            records[worker_id] = client.control_worker(worker_id, "code", {}, timeout=timeout)
        except ClientError as exc:
            records[worker_id] = {"error": str(exc)}
    return records, unmatched
