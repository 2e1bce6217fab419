"""One client's retry book: what it knows of each callee's policy, and what it saw since it last told the node.

Owns the client side of the node's retry table (node/retries.py): learning the
effective policy and the declared idempotency of a (caller, callee) pair, counting
requests and retry figures locally, and reporting them with the `retry_sync` control
op at most once a second (and before every retry, which is also when the callee's
shared budget is asked).  A policy changed on the running tree (`supervise retry set`)
reaches a client at its next sync.

    book = RetryBook("checkout")
    view = book.view(client, "inventory")        # learns it from the node on first use
    book.count(client, "inventory")              # a request; syncs when a second has passed

Not thread-safe, like the Client that owns it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Protocol

from supervisor_tree.client.errors import ClientError
from supervisor_tree.client.retry import Figures, Idempotency
from supervisor_tree.spec import RetryPolicy

__all__ = ["RetryBook", "CalleeView", "SYNC_EVERY", "default_caller"]

SYNC_EVERY = 1.0  # s between reports to the node while calls are made
SYNC_WAIT = 2.0  # s to wait for the node's answer


class _Control(Protocol):
    def control(self, op: str, _wait: float | None = None, **args: object) -> object: ...
    def node_running(self) -> bool: ...


def default_caller() -> str:
    """How a client outside the tree is named in the node's per-pair figures."""
    return f"pid:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class CalleeView:
    """The effective retry settings of one (caller, callee) pair, as the node answered them."""

    policy: RetryPolicy | None
    idempotent: Idempotency
    budget: str  # the callee's budget, in words


class RetryBook:
    def __init__(self, caller: str) -> None:
        self.caller = caller
        self.known: dict[str, CalleeView] = {}
        self.figures: dict[str, Figures] = {}
        self.version = -1  # the node's version of its retry table when this book last heard it
        self._next_sync = time.monotonic() + SYNC_EVERY

    def view(self, client: _Control, callee: str) -> CalleeView:
        view = self.known.get(callee)
        if view is None:
            self.sync(client, learn=callee)
            view = self.known.get(callee) or CalleeView(None, False, "unknown")
            self.known[callee] = view
        return view

    def pair(self, callee: str) -> Figures:
        figures = self.figures.get(callee)
        if figures is None:
            figures = self.figures[callee] = Figures()
        return figures

    def count(self, client: _Control, callee: str) -> None:
        """One request to `callee`; reports to the node when SYNC_EVERY has passed."""
        self.pair(callee).requests += 1
        if time.monotonic() >= self._next_sync:
            self.flush(client)

    def flush(self, client: _Control, wait: float = SYNC_WAIT) -> None:
        """Report what was counted (best effort: a node that does not answer gets it next time)."""
        try:
            self.sync(client, wait=wait)
        except ClientError:
            pass

    def sync(self, client: _Control, *, learn: str | None = None, withdraw: str | None = None,
             wait: float = SYNC_WAIT) -> bool | None:
        """One `retry_sync`: send the figures, learn views, ask for one retry of `withdraw`."""
        sent = {callee: f.take() for callee, f in self.figures.items() if f}
        self._next_sync = time.monotonic() + SYNC_EVERY
        try:
            answer = client.control("retry_sync", wait, caller=self.caller, version=self.version,
                                    figures={c: f.as_dict() for c, f in sent.items()},
                                    callees=list(self.known), learn=learn, withdraw=withdraw)
        except ClientError:
            for callee, f in sent.items():  # not counted by the node: keep them for the next sync
                self.pair(callee).add(f)
            raise
        assert isinstance(answer, dict)
        self.version = int(answer["version"])
        for callee, view in (answer.get("views") or {}).items():
            self.known[callee] = _view_of(view)
        allowed = answer.get("allowed")
        return None if allowed is None else bool(allowed)


def _view_of(view: object) -> CalleeView:
    """A view as the node's retry table sends it (JSON: node/retries.py's `view`); ClientError if it is not one."""
    if not isinstance(view, dict):
        raise ClientError(f"retry_sync: the node sent a view that is not a table: {view!r:.60}")
    policy, declared = view.get("policy"), view.get("idempotent", False)
    try:
        rebuilt = RetryPolicy.from_json(policy) if isinstance(policy, dict) else None
    except ValueError as exc:
        raise ClientError(f"retry_sync: the node sent a bad policy: {exc}") from None
    idempotent: Idempotency = (frozenset(str(o) for o in declared) if isinstance(declared, list)
                               else declared is True)
    return CalleeView(rebuilt, idempotent, str(view.get("budget", "unknown")))


class NodeBudget:
    """The `retry.Budget` a client hands to `call_with_retry`: each retry asks the node."""

    def __init__(self, book: RetryBook, client: _Control) -> None:
        self.book, self.client = book, client

    def withdraw(self, worker_id: str) -> bool:
        try:
            return bool(self.book.sync(self.client, withdraw=worker_id))
        except ClientError:
            return False  # the node does not answer: the tree is in no state to take a retry

    def describe(self, worker_id: str) -> str:
        view = self.book.known.get(worker_id)
        return view.budget if view is not None else "unknown"
