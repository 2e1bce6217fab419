"""The steady-state hypothesis (Chaos Toolkit's): checked before a chaos run and after it healed.

Owns one question, asked of the running tree: is every permanent child running, and
does every running worker answer?  (A worker answers on its control socket, served by
the same loop as its mailbox, so a hung or wedged loop fails it.)  `wait_steady` asks
again until the answer is yes or the time is up: that is what healing waits for.

    state = check(client)
    state.ok, state.problems          # ("root/core/queue is restarting", ...)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from supervisor_tree.client import Client, ClientError

__all__ = ["SteadyState", "check", "wait_steady"]


@dataclass(frozen=True, slots=True)
class SteadyState:
    ok: bool
    problems: tuple[str, ...]
    workers: int  # running workers that answered

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "problems": list(self.problems), "workers_answering": self.workers}


def _walk(view: dict[str, Any], problems: list[str], running: list[tuple[str, bool]]) -> None:
    dynamic = view["strategy"] == "simple_one_for_one"  # its children come and go as its manager decides
    for c in view["children"]:
        where = f"{view['path']}/{c['id']}"
        if c["restart"] == "permanent" and c["state"] != "running" and not dynamic:
            problems.append(f"{where} is {c['state'].replace('_', ' ')}")
        if c.get("supervisor"):
            _walk(c["supervisor"], problems, running)
        elif c["type"] == "worker" and c["state"] == "running":
            running.append((str(c["id"]), dynamic))


def check(client: Client, timeout: float = 5.0) -> SteadyState:
    try:
        status = client.status()
    except ClientError as exc:
        return SteadyState(False, (f"the node does not answer: {exc}",), 0)
    tree = status.get("tree")
    if tree is None:
        return SteadyState(False, ("the root supervisor has exited: the tree is gone",), 0)
    problems: list[str] = []
    running: list[tuple[str, bool]] = []
    _walk(tree, problems, running)
    answered = 0
    for worker, dynamic in running:
        try:
            if client.control_worker(worker, "ping", {}, timeout=timeout) == "pong":
                answered += 1
                continue
            problems.append(f"worker {worker} answered ping wrongly")
        except ClientError as exc:
            if not dynamic:  # a pool's member may have been let go since the status was taken
                problems.append(f"worker {worker} does not answer: {exc}")
    return SteadyState(not problems, tuple(problems), answered)


def wait_steady(client: Client, timeout: float) -> SteadyState:
    deadline = time.monotonic() + timeout
    while True:
        state = check(client)
        if state.ok or time.monotonic() >= deadline or not client.node_running():
            return state
        time.sleep(0.1)  # restarts are under way in the node; nothing here to wait on but time
