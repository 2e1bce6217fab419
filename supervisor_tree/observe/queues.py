"""`supervise queues`: where messages and items pile up (the seed's queue analysis).

Owns the ranking of two kinds of queue: worker mailboxes (the heartbeat's
`mailbox_depth`, against the child's `mailbox_limit` where one is configured, with
what its overflow policy has dropped or rejected) and queue components (workers whose
`statistics()` report `depth` and `capacity`, such as the built-in Queue).  Pure:
it reads a `Snapshot`.

    rows = deepest(sampler.sample(), top=10)
    [(r.worker, r.kind, r.depth, r.limit) for r in rows]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from supervisor_tree.observe.snapshot import Snapshot

__all__ = ["QueueRow", "deepest"]


@dataclass(frozen=True, slots=True)
class QueueRow:
    worker: str
    kind: str  # "mailbox" or "queue" (a queue component's items)
    depth: int
    limit: int | None  # mailbox_limit, or the queue's capacity
    policy: str | None  # a mailbox's overflow policy
    lost: int  # messages dropped or rejected by the overflow policy; a queue's refused puts
    high_water: int | None

    @property
    def fill(self) -> float | None:
        return None if not self.limit else self.depth / self.limit

    def as_json(self) -> dict[str, object]:
        return asdict(self) | {"fill": self.fill}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def deepest(snap: Snapshot, top: int = 10) -> list[QueueRow]:
    """The `top` deepest queues of either kind, deepest first (ties: fullest, then by name)."""
    rows: list[QueueRow] = []
    for w in snap.workers:
        if w.state != "running":
            continue
        st = w.stats
        if w.mailbox is not None:
            lost = (_int(st.get("mailbox_dropped")) or 0) + (_int(st.get("mailbox_rejected")) or 0)
            rows.append(QueueRow(w.id, "mailbox", w.mailbox, w.mailbox_limit, _str(st.get("mailbox_policy")), lost,
                                 _int(st.get("max_batch"))))
        own = st.get("worker")
        if isinstance(own, dict) and _int(own.get("depth")) is not None and _int(own.get("capacity")) is not None:
            rows.append(QueueRow(w.id, "queue", int(own["depth"]), int(own["capacity"]), None,
                                 _int(own.get("full_refusals")) or 0, _int(own.get("high_water"))))
    rows.sort(key=lambda r: (-r.depth, -(r.fill or 0.0), r.worker, r.kind))
    return rows[:top]


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
