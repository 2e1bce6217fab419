"""Blast radius: which children must restart when a worker dies, predicted from the tree and OTP's rules.

Owns a model of the running tree (`TreeModel.from_status`: each supervisor's strategy,
intensity window and children in start order, from `status`) and `predict`, an
oracle written apart from the supervisor it checks (otp/): the restart type decides
whether the exit restarts anything (permanent always; transient only when abnormal;
temporary never), the strategy decides the scope (one_for_one and simple_one_for_one:
the child; one_for_all: every child; rest_for_one: the child and those started after
it), every restart attempt is charged to the intensity window (a failing start is
retried and charged again), and a supervisor past its intensity stops everything
under it and exits `shutdown`, which its parent handles like any child exit.
`compare` checks what the events showed against it.

    model = TreeModel.from_status(client.status())
    p = predict(model, "queue", abnormal=True)
    p.restarted        # {"queue"} under one_for_one; rest_for_one: queue and the workers after it
    p.escalated        # supervisors that reach their intensity, innermost first

Children of a simple_one_for_one supervisor are its manager's business (they come and
go): they are predicted and checked only when targeted themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Member", "SupModel", "TreeModel", "Prediction", "predict", "predictions", "compare"]


@dataclass(frozen=True, slots=True)
class Member:
    """A child of a supervisor: a worker (id) or a nested supervisor (its path)."""

    key: str
    type: str  # "worker" | "supervisor"
    restart: str  # "permanent" | "transient" | "temporary"
    state: str
    generation: int
    path: str | None  # a nested supervisor's path


@dataclass(frozen=True, slots=True)
class SupModel:
    path: str
    strategy: str
    intensity: int
    period: int
    restarts: tuple[int, ...]  # newest first, whole seconds of the node's clock
    clock: int
    children: tuple[Member, ...]  # start order

    def headroom(self) -> int:
        """Restarts it may still take now before it gives up (OTP's window, as at the snapshot)."""
        return self.intensity - len([r for r in self.restarts if r >= self.clock - self.period])


@dataclass(frozen=True, slots=True)
class TreeModel:
    sups: dict[str, SupModel]
    worker_sup: dict[str, str]  # worker id -> its supervisor's path

    @classmethod
    def from_status(cls, status: dict[str, object]) -> TreeModel:
        sups: dict[str, SupModel] = {}
        worker_sup: dict[str, str] = {}

        def walk(view: dict[str, object]) -> None:
            members = []
            for c in view["children"]:  # type: ignore[attr-defined]
                nested = c.get("supervisor")
                members.append(Member(str(c["id"]), c["type"], c["restart"], c["state"], int(c["generation"] or 0),
                                      nested["path"] if nested else None))
                if nested:
                    walk(nested)
                elif c["type"] == "worker":
                    worker_sup[str(c["id"])] = str(view["path"])
            sups[str(view["path"])] = SupModel(str(view["path"]), str(view["strategy"]), int(view["intensity"]),  # type: ignore[call-overload]
                                               int(view["period"]), tuple(view.get("intensity_window") or ()),  # type: ignore[call-overload, arg-type]
                                               int(view.get("clock") or 0), tuple(members))  # type: ignore[call-overload]

        tree = status.get("tree")
        if isinstance(tree, dict):
            walk(tree)
        return cls(sups, worker_sup)

    def workers(self) -> list[str]:
        return list(self.worker_sup)

    def generation(self, worker_id: str) -> int:
        sup = self.sups[self.worker_sup[worker_id]]
        return next(m.generation for m in sup.children if m.key == worker_id)

    def dynamic(self, worker_id: str) -> bool:
        """A child of a simple_one_for_one supervisor."""
        sup = self.sups.get(self.worker_sup.get(worker_id, ""))
        return sup is not None and sup.strategy == "simple_one_for_one"

    def static_workers_under(self, path: str) -> set[str]:
        sup = self.sups.get(path)
        if sup is None or sup.strategy == "simple_one_for_one":
            return set()
        out: set[str] = set()
        for m in sup.children:
            out |= self.static_workers_under(m.path) if m.path else {m.key}
        return out

    def supervisors_under(self, path: str) -> set[str]:
        out = {path}
        for m in self.sups[path].children if path in self.sups else ():
            if m.path:
                out |= self.supervisors_under(m.path)
        return out


@dataclass(slots=True)
class Prediction:
    restarted: set[str] = field(default_factory=set)  # workers whose generation must go up
    gone: set[str] = field(default_factory=set)  # workers that stop and are not restarted
    supervisors: set[str] = field(default_factory=set)  # nested supervisors restarted whole (their paths)
    escalated: list[str] = field(default_factory=list)  # supervisors past their intensity, innermost first
    charged: dict[str, int] = field(default_factory=dict)  # supervisor -> restarts this fault charges to it
    tree_dies: bool = False

    def key(self) -> tuple[object, ...]:
        return (frozenset(self.restarted), frozenset(self.gone), tuple(self.escalated), self.tree_dies)

    def core(self) -> set[str]:
        """The workers and nested supervisors this fault restarts or stops."""
        return self.restarted | self.gone | self.supervisors

    def region(self) -> set[str]:
        """What this fault may touch: its core and the supervisors whose windows it charges."""
        return self.core() | set(self.charged)

    def describe(self) -> str:
        parts = [f"restart {', '.join(sorted(self.restarted)) or 'nothing'}"]
        if self.gone:
            parts.append(f"stop for good {', '.join(sorted(self.gone))}")
        if self.escalated:
            parts.append(f"escalate {' -> '.join(self.escalated)}")
        if self.tree_dies:
            parts.append("the root gives up: the tree dies")
        return "; ".join(parts)


def _add_restart(window: tuple[int, ...], now: int, intensity: int, period: int) -> tuple[tuple[int, ...], bool]:
    """OTP's add_restart: whole seconds; those older than now - period are forgotten; more than intensity: give up."""
    kept = (now,) + tuple(r for r in window if r >= now - period)
    return kept, len(kept) <= intensity


def _restarts(restart: str, abnormal: bool) -> bool:
    return restart == "permanent" or (restart == "transient" and abnormal)


class _Oracle:
    def __init__(self, model: TreeModel, now: int) -> None:
        self.model, self.now, self.p = model, now, Prediction()
        self.windows = {path: sup.restarts for path, sup in model.sups.items()}

    def _below(self, m: Member) -> set[str]:
        return self.model.static_workers_under(m.path) if m.path else {m.key}

    def _scope(self, sup: SupModel, i: int) -> tuple[Member, ...]:
        if sup.strategy == "one_for_all":
            return sup.children
        if sup.strategy == "rest_for_one":
            return sup.children[i:]
        return (sup.children[i],)

    def _started_before(self, members: Iterable[Member], failing: str) -> tuple[set[str], bool]:
        """The workers a group start brings up before `failing` fails (start order), and whether it was met."""
        out: set[str] = set()
        for m in members:
            if m.restart == "temporary":
                continue
            if m.path:
                sup = self.model.sups.get(m.path)
                if sup is None or sup.strategy == "simple_one_for_one":
                    continue
                inner, met = self._started_before(sup.children, failing)
                out |= inner
                if met:
                    return out, True
            elif m.key == failing:
                return out, True
            else:
                out.add(m.key)
        return out, False

    def child_exit(self, sup_path: str, key: str, abnormal: bool, failing_starts: int, failing: str) -> None:
        """`key` exited under `sup_path`; the next `failing_starts` starts of worker `failing` fail."""
        sup = self.model.sups[sup_path]
        i = next(n for n, m in enumerate(sup.children) if m.key == key)
        child = sup.children[i]
        if not _restarts(child.restart, abnormal):
            self.p.gone |= self._below(child)
            return
        scope = self._scope(sup, i)
        while True:
            self.p.charged[sup_path] = self.p.charged.get(sup_path, 0) + 1
            window, allowed = _add_restart(self.windows[sup_path], self.now, sup.intensity, sup.period)
            self.windows[sup_path] = window
            if not allowed:
                self._escalate(sup, failing_starts, failing)
                return
            if failing_starts == 0:
                break
            self.p.restarted |= self._started_before(scope, failing)[0]
            failing_starts -= 1  # that start failed: retried, and charged again (R7)
        for m in scope:
            if m.restart == "temporary" and m.key != key:
                self.p.gone |= self._below(m)  # a temporary sibling is stopped and not restarted
                continue
            self.p.restarted |= self._below(m)
            if m.path:
                self.p.supervisors |= self.model.supervisors_under(m.path)

    def _escalate(self, sup: SupModel, failing_starts: int, failing: str) -> None:
        self.p.escalated.append(sup.path)
        if "/" not in sup.path:
            self.p.tree_dies = True
            return
        parent, key = sup.path.rsplit("/", 1)
        self.child_exit(parent, key, False, failing_starts, failing)  # a supervisor gives up with reason shutdown


def predict(model: TreeModel, target: str, *, abnormal: bool, failing_starts: int = 0, delay_s: int = 0) -> Prediction:
    """What OTP's rules say happens when worker `target` exits `delay_s` seconds after the snapshot."""
    sup_path = model.worker_sup[target]
    oracle = _Oracle(model, model.sups[sup_path].clock + delay_s)
    oracle.child_exit(sup_path, target, abnormal, failing_starts, target)
    return oracle.p


def predictions(model: TreeModel, target: str, *, abnormal: bool, failing_starts: int = 0,
                delays: Iterable[int] = (0, 1)) -> list[Prediction]:
    """The distinct predictions over the seconds the exit may land in (the window counts whole seconds)."""
    out: dict[tuple[object, ...], Prediction] = {}
    for d in delays:
        p = predict(model, target, abnormal=abnormal, failing_starts=failing_starts, delay_s=d)
        out.setdefault(p.key(), p)
    return list(out.values())


@dataclass(frozen=True, slots=True)
class Observed:
    restarted: frozenset[str]
    escalated: tuple[str, ...]
    tree_died: bool


def compare(expected: list[Prediction], observed: Observed) -> str | None:
    """None when the observation matches one of the predictions, else what differed from the first."""
    for p in expected:
        if (set(observed.restarted) == p.restarted and list(observed.escalated) == p.escalated
                and observed.tree_died == p.tree_dies):
            return None
    p = expected[0]
    problems = []
    if set(observed.restarted) != p.restarted:
        extra = sorted(set(observed.restarted) - p.restarted)
        missing = sorted(p.restarted - set(observed.restarted))
        if extra:
            problems.append(f"restarted unexpectedly: {', '.join(extra)}")
        if missing:
            problems.append(f"not restarted: {', '.join(missing)}")
    if list(observed.escalated) != p.escalated:
        problems.append(f"escalations {list(observed.escalated)} (expected {p.escalated})")
    if observed.tree_died != p.tree_dies:
        problems.append("the tree died" if observed.tree_died else "the tree survived (expected it to die)")
    seen = f"restart {', '.join(sorted(observed.restarted)) or 'nothing'}"
    if observed.escalated:
        seen += f"; escalate {' -> '.join(observed.escalated)}"
    return "; ".join(problems) + f" [predicted: {p.describe()}; observed: {seen}]"
