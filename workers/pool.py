"""A worker pool (poolboy): a manager worker and pooled member processes.

Owns which member is idle, busy or checked out, the requests waiting for one,
starting overflow members and reaping them when idle, and answering callers
whose member died.  Members are children of a simple_one_for_one supervisor,
started through the node's dynamic API; that supervisor restarts a crashed
member, and the manager learns of deaths and restarts from the node's events.
The typed client and the refusals are in workers/pool_client.py.

Invariant: the members' supervisor holds `size` members plus the overflow ones
this manager started, whatever happened to earlier managers.  A manager that
starts (again) adopts the members already running there, up to `size`, stops
the rest (an earlier manager's overflow), and starts only what is missing: a
manager restarted alone (`supervise terminate pool` then `restart pool`, a
kill, a reload of its spec) never grows the pool.

The tree (examples/pool.toml): a supervisor holding the members' supervisor,
then the manager (one_for_all: the manager's state is only good with its members)

    [[tree.children]]                  # id = "pool_sup", type = "supervisor", strategy = "one_for_all"
    [[tree.children.children]]         # id = "pool_members", strategy = "simple_one_for_one"
    [[tree.children.children.children]]   # id = "pool_member", start = "supervisor_tree.workers.pool_member:PoolMember"
    [[tree.children.children]]         # id = "pool", start = "supervisor_tree.workers.pool:PoolManager",
                                       # args = { members = "pool_members", size = 10, max_overflow = 5 }

    pool = PoolClient(client, "pool")
    pool.run("echo", 42)                              # 42, run on some member
    pool.run_many("mymod:score", [(x,) for x in xs])  # one round trip for the whole list
    with pool.member(timeout=1.0) as member_id:       # checkout ... checkin
        client.call(member_id, ("run", "pid"))

    $ supervise call pool '{"op": "run", "task": "echo", "args": [1]}'

A caller never hangs on a dead member: its task fails with MemberExited once the
node reports the exit.  `timeout` bounds the wait for a free member (PoolTimeout);
how long the task itself may run is the caller's wire timeout.

Batches: when runs are short (a few microseconds: handing one to a member costs more than
running it) and outnumber the free members (many callers, or one pipelining them:
`PoolClient.map`): a free member is handed the next waiting runs, in order, as many as
run in `spread` seconds by the members' reports of late (at most `batch`), in one
message; it runs them one by one, answers their callers together (one frame per caller)
and tells the manager once.  Runs that take longer go one per member (poolboy's way); short
runs start no overflow member (one frees within `spread`, sooner than a fork).  An answer
may wait for the next task of its batch (at most `HOLD_S` plus that task's run).
Each run keeps its own answer: a task that raises fails its caller only; a run still
waiting in a batch at its deadline is answered PoolTimeout, not run.  A member that dies
fails with MemberExited every run of its batch it had not answered (each run at most
once, never run again elsewhere).  Assignment happens after the messages at hand were
handled (a calls frame of 100 runs is shared out as a whole).  `batch = 1`: never more
than one run per member.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from typing import Any

from supervisor_tree import NOREPLY
from supervisor_tree.workers._component import BadRequest, Component, NodeEvents, PidWatch, Token, deadline_of
from supervisor_tree.workers.pool_client import DEFAULT_TIMEOUT, Lease, MemberExited, PoolClient, PoolTimeout
from supervisor_tree.workers.pool_member import Job, PoolMember, TaskFailed, register_task
from supervisor_tree.workers.pool_state import Kind, Member, Request, State, Ticket

__all__ = ["PoolManager", "PoolMember", "PoolClient", "Lease", "PoolTimeout", "MemberExited", "TaskFailed",
           "register_task"]

log = logging.getLogger(__name__)

_REAP = ("pool", "reap")
_OVERFLOW = ("pool", "overflow")
_ASSIGN = ("pool", "assign")


class PoolManager(Component):
    """The pool's manager.  Ops (dict or tuple form, see supervisor_tree.workers._component):

    run(task, args=[], timeout=5.0) -> the task's value
    run_many(task, args=[[...], ...], timeout=5.0, chunk=256) -> [value, ...]
        split in chunks of at least `chunk` over the idle members
    checkout(block=True, timeout=5.0, holder=None) -> {"member": id, "ref": n}
        `holder`: a pid; its death checks the member back in
    checkin(ref) -> bool              stats() -> counts and member states

    Init args: members (the simple_one_for_one supervisor's id), size (10),
    max_overflow (5), overflow_ttl (s an idle overflow member lives, 1.0),
    member_args (extra args for each member), events_poll (s, 0.02),
    batch (at most this many runs handed to one member at once, 32), spread (s: runs are handed out
    together only as many as run in this long, by the members' reports of late, 200e-6).
    """

    idempotent_calls = frozenset({"stats"})  # a task may not be: `call(..., idempotent=True)` for one that is

    def init(self, members: str = "pool_members", size: int = 10, max_overflow: int = 5, overflow_ttl: float = 1.0,
             member_args: dict[str, Any] | None = None, events_poll: float = 0.02, batch: int = 32,
             spread: float = 200e-6) -> None:
        if size < 1 or max_overflow < 0 or batch < 1:
            raise ValueError(f"size and batch must be >= 1 and max_overflow >= 0; got size={size}, batch={batch}, "
                             f"max_overflow={max_overflow}")
        self.batch = batch
        self.spread = spread
        self.task_s = 1e-3  # what a run takes lately (members report it): one per member until they say less
        self.sup, self.size, self.max_overflow, self.overflow_ttl = members, size, max_overflow, overflow_ttl
        self.member_args = dict(member_args or {})
        self.members: dict[str, Member] = {}
        self.idle: list[str] = []  # a stack: the most recently used member first (poolboy's lifo)
        self.waiting: deque[Request] = deque()
        self.tickets: dict[int, Ticket] = {}
        self.refs = itertools.count(1)
        self.counts = {"tasks": 0, "handoffs": 0, "batches": 0, "checkouts": 0, "member_exits": 0, "overflow_started": 0, "reaped": 0}
        self.reap_armed = self.overflow_armed = self.assign_armed = False
        self.events = NodeEvents(self, kinds=("exited", "started"))
        self.holders = PidWatch()
        self.counts["adopted"] = self._adopt()
        for _ in range(size - len(self.members)):
            self._start_member(overflow=False)
        self.start_ticking(events_poll)

    def _adopt(self) -> int:
        """Take over the members an earlier manager left (up to `size`); stop the rest.  Returns how many."""
        children = self.client.which_children(self.sup)
        children.sort(key=lambda c: c["state"] != "running")  # running ones first (a stable sort keeps the order)
        for child in children[: self.size]:
            member = Member(child["key"], child["pid"] or 0, child["generation"], overflow=False)
            if child["state"] == "running":
                self.idle.append(member.key)
            else:  # restarting: its "started" event brings it in (tick)
                member.state = State.DOWN
            self.members[member.key] = member
        for child in children[self.size :]:
            try:
                self.client.terminate_child(child["pid"] or child["key"], supervisor=self.sup)
            except Exception as exc:  # noqa: BLE001 - the pool is right without it; say so and go on
                log.warning("pool %s: could not stop surplus member %s under %r: %s", self.id, child["key"], self.sup,
                            exc)
        if children:
            log.info("pool %s: adopted %d running member(s) of %r, stopped %d surplus", self.id,
                     min(len(children), self.size), self.sup, max(0, len(children) - self.size))
        return min(len(children), self.size)

    def terminate(self, reason: object) -> None:
        self.events.close()
        self.holders.close()

    # -- requests --

    def op_run(self, task: str, args: Any = (), timeout: float | None = DEFAULT_TIMEOUT) -> object:
        if timeout is None or timeout <= 0 or self._deadline_due is None:
            return self._enqueue(Request(Kind.RUN, self.caller(), deadline_of(timeout), task, args))
        # A run that may wait, with the deadline timer armed: `_enqueue`'s waiting case, inlined (a pipelined
        # burst of runs comes through here; the timer, armed for an earlier deadline, fires before this one).
        deadline = time.monotonic() + timeout
        self.waiting.append(Request(Kind.RUN, self.caller(), deadline, task, args))
        if deadline < self._deadline_due:
            self.arm_deadline(deadline)
        if not self.assign_armed:
            self._assign_soon()
        return NOREPLY

    def op_run_many(self, task: str, args: Any, timeout: float | None = DEFAULT_TIMEOUT, chunk: int = 256) -> object:
        if not isinstance(args, (list, tuple)):
            raise BadRequest(f"run_many: args must be a list of argument lists; got {type(args).__name__}")
        if not args:
            return []
        return self._enqueue(Request(Kind.RUN_MANY, self.caller(), deadline_of(timeout), task, args, max(1, int(chunk))))

    def op_checkout(self, block: bool = True, timeout: float | None = DEFAULT_TIMEOUT, holder: int | None = None) -> object:
        if holder is not None and not self.holders.watch(holder):
            raise BadRequest(f"checkout: holder pid {holder} is not alive")
        return self._enqueue(Request(Kind.CHECKOUT, self.caller(), deadline_of(timeout if block else 0), holder=holder))

    def op_checkin(self, ref: int) -> bool:
        member = next((m for m in self.members.values() if m.holder is not None and m.holder[1] == ref), None)
        if member is None:
            return False  # already checked in, or its member died
        self._release(member)
        return True

    def op_done(self, key: str, generation: int, done: list[tuple[int, int, bool, Any]], seconds: float = 0.0,
                ran: int = 1) -> None:
        """A member finished its batch: `done` holds the outcomes of run_many parts (the runs it answered
        itself), `seconds` what the batch's `ran` tasks took."""
        self.task_s += (max(seconds / max(ran, 1), 1e-7) - self.task_s) * min(1.0, ran / 16)  # what one takes, lately
        member = self.members.get(key)
        if member is not None and member.generation == generation and member.state is State.BUSY:
            self._release(member)
        tickets = self.tickets
        for ticket, chunk, ok, value in done:
            t = tickets.get(ticket)
            if t is None:
                continue  # failed already (another chunk's member died, or a task raised)
            if not ok:
                del tickets[ticket]
                self.reply_error(t.token, TaskFailed(f"task {t.task!r} raised {value}"))
            else:
                t.results[chunk] = value
                t.pending -= 1
                if t.pending == 0:
                    del tickets[ticket]
                    self.reply(t.token, [v for part in t.results for v in part])

    def op_stats(self) -> dict[str, Any]:
        states = [m.state for m in self.members.values()]
        return {**self.counts, "size": self.size, "max_overflow": self.max_overflow, "members": len(self.members),
                "idle": states.count(State.IDLE), "busy": states.count(State.BUSY),
                "checked_out": states.count(State.OUT), "down": states.count(State.DOWN),
                "overflow": sum(m.overflow for m in self.members.values()), "waiting": len(self.waiting),
                "in_flight": sum(len(m.jobs) for m in self.members.values())}

    # -- assigning members --

    def _enqueue(self, request: Request) -> object:
        self.waiting.append(request)
        deadline = request.deadline
        if deadline is None or deadline > time.monotonic():
            if deadline is not None:
                self.arm_deadline(deadline)
            self._assign_soon()
            return NOREPLY
        self._assign()  # a request that cannot wait is served now, or refused
        if request in self.waiting:
            self._assign(overflow=True)  # it takes an overflow member now
            if request in self.waiting:
                self.waiting.remove(request)
                self._forget_holder(request.holder, None)
                raise PoolTimeout(self._busy_text())
        return NOREPLY

    def _assign_soon(self) -> None:
        """Assign once the messages at hand were handled: a burst of runs is shared out as a whole."""
        if not self.assign_armed and self.waiting:
            self.assign_armed = True
            self.send_after(0, _ASSIGN)

    def _assign(self, overflow: bool = False) -> None:
        """Serve waiting requests in order while members are free (or overflow may start)."""
        waiting = self.waiting
        while waiting:
            if not self.idle:
                # Start an overflow member only after the messages already here were
                # handled: a "done" among them frees a member without a fork.
                if not overflow:
                    if not self.overflow_armed:
                        self.overflow_armed = True
                        self.send_after(0, _OVERFLOW)
                    return
                if not self._start_overflow():
                    return
            kind = waiting[0].kind
            if kind is Kind.RUN:
                # One run per member unless runs are short (lately): then as many as run in `spread`.
                self._dispatch_runs(min(self.batch, max(1, int(self.spread / self.task_s))))
                continue
            r = waiting.popleft()
            if kind is Kind.CHECKOUT:
                member = self.members[self.idle.pop()]
                ref = next(self.refs)
                member.state, member.holder = State.OUT, (r.holder, ref)
                self.counts["checkouts"] += 1
                lease: Lease = {"member": member.key, "ref": ref}
                self.reply(r.token, lease)
            else:
                self._dispatch_many(r.token, r.task, r.args, r.chunk)

    def _dispatch_runs(self, share: int) -> None:
        """Hand the next `share` waiting runs (fewer when another kind of request comes first) to one member."""
        waiting = self.waiting
        member = self.members[self.idle.pop()]
        jobs: list[Job] = []
        while len(jobs) < share and waiting and waiting[0].kind is Kind.RUN:
            r = waiting.popleft()  # the member answers its caller: the manager keeps the job only for its death
            jobs.append((0, 0, r.task, r.args, False, r.token, r.deadline))
        self.counts["tasks"] += len(jobs)
        self.counts["handoffs"] += 1  # messages that carried runs to members: tasks / handoffs runs per message
        self._send_jobs(member, jobs)

    def _dispatch_many(self, token: Token, task: str, args: Any, chunk: int) -> None:
        parts = max(1, min(len(self.idle), math.ceil(len(args) / chunk)))
        step = math.ceil(len(args) / parts)
        tid = next(self.refs)
        if parts > 1:  # one part: the member answers the caller itself, one hop and two pickles fewer
            self.tickets[tid] = Ticket(token, task, [None] * parts, parts)
        self.counts["batches"] += 1
        for i in range(parts):
            job: Job = (tid, i, task, args[i * step:(i + 1) * step], True, token if parts == 1 else None, None)
            self._send_jobs(self.members[self.idle.pop()], [job])

    def _send_jobs(self, member: Member, jobs: list[Job]) -> None:
        member.state, member.jobs = State.BUSY, jobs
        try:
            self.cast(member.key, ("jobs", jobs))
        except Exception as exc:  # noqa: BLE001 - dead and not restarted in time: its callers are told
            self._member_exited(member, f"unreachable ({exc})")

    def _release(self, member: Member) -> None:
        if member.holder is not None:
            self._forget_holder(member.holder[0], member)
        member.state, member.jobs, member.holder = State.IDLE, [], None
        member.idle_since = time.monotonic()
        self.idle.append(member.key)
        if self.waiting:
            self._assign_soon()
        elif member.overflow and not self.reap_armed:
            self.reap_armed = True
            self.send_after(self.overflow_ttl, _REAP)

    def _forget_holder(self, pid: int | None, leaving: Member | None) -> None:
        """Stop watching `pid` unless it holds another member or waits for one."""
        if pid is None or any(m.holder and m.holder[0] == pid for m in self.members.values() if m is not leaving):
            return
        if not any(r.holder == pid for r in self.waiting):
            self.holders.unwatch(pid)

    def _busy_text(self) -> str:
        s = self.op_stats()
        return (f"pool {self.id!r}: no member free in time "
                f"({s['busy']} busy, {s['checked_out']} checked out, {s['down']} restarting; size {self.size}, "
                f"overflow {s['overflow']}/{self.max_overflow}); raise size or max_overflow, or the timeout")

    # -- members' lives --

    def _start_member(self, overflow: bool) -> Member:
        client = self.client
        started = client.start_child(self.sup, args={**self.member_args, "manager": self.id})
        if not started.get("ok"):
            raise RuntimeError(f"pool {self.id!r}: starting a member under {self.sup!r} failed: {started}")
        pid = started["pid"]
        child = next(c for c in client.which_children(self.sup) if c["pid"] == pid)
        member = Member(child["key"], pid, child["generation"], overflow)
        self.members[member.key] = member
        self.idle.append(member.key)
        return member

    def _start_overflow(self) -> bool:
        if sum(m.overflow for m in self.members.values()) >= self.max_overflow:
            return False
        try:
            self._start_member(overflow=True)
        except Exception as exc:  # noqa: BLE001 - no overflow this time; the waiting requests wait on
            log.warning("pool %s: could not start an overflow member under %r: %s", self.id, self.sup, exc)
            return False
        self.counts["overflow_started"] += 1
        return True

    def tick(self, now: float) -> None:
        for rec in self.events.drain():
            child = rec.get("child")
            member = self.members.get(child) if isinstance(child, str) else None
            if member is None:
                continue
            if rec["event"] == "exited" and rec.get("generation") == member.generation:
                self._member_exited(member, rec.get("reason"))
            elif rec["event"] == "started" and rec.get("generation", 0) > member.generation:
                if member.state is not State.DOWN:  # its exit was published before we subscribed
                    self._member_exited(member, "unknown (exit not seen)")
                member.pid, member.generation = rec["pid"], rec["generation"]
                self._release(member)
        for pid in self.holders.dead():
            for m in [m for m in self.members.values() if m.holder and m.holder[0] == pid]:
                self._release(m)
            self.holders.unwatch(pid)

    def _member_exited(self, member: Member, reason: object) -> None:
        self.counts["member_exits"] += 1
        for ticket, _, task, _, _, caller, _ in member.jobs:
            t = self.tickets.pop(ticket, None) if caller is None else None
            token = caller if caller is not None else t.token if t is not None else None
            if token is not None:  # answered (or failed) already when its ticket is gone
                running = f"while running task {task!r}" if len(member.jobs) == 1 else (
                    f"before answering task {task!r} (one of a batch of {len(member.jobs)} it was handed)")
                self.reply_error(token, MemberExited(
                    f"pool member {member.key!r} (pid {member.pid}, generation {member.generation}) exited {running}: "
                    f"{reason}; its supervisor restarts it"))
        if member.holder is not None:
            self._forget_holder(member.holder[0], member)
        if member.key in self.idle:
            self.idle.remove(member.key)
        member.state, member.jobs, member.holder = State.DOWN, [], None

    def on_info(self, msg: object) -> None:
        if msg == _ASSIGN:
            self.assign_armed = False
            return self._assign()
        if msg == _OVERFLOW:
            self.overflow_armed = False
            # Short runs wait for no fork: batched, a member frees within `spread`.
            short = bool(self.waiting) and self.waiting[0].kind is Kind.RUN and self.task_s * 2 <= self.spread
            return None if short else self._assign(overflow=True)  # a done assigns them (_release)
        if msg != _REAP:
            return super().on_info(msg)
        self.reap_armed = False
        now = time.monotonic()
        later = [m for m in self.members.values() if m.overflow and m.state is State.IDLE]
        for m in later:
            if m.idle_since + self.overflow_ttl <= now:
                self.idle.remove(m.key)
                del self.members[m.key]
                try:
                    self.client.terminate_child(m.pid, supervisor=self.sup)
                except Exception as exc:  # noqa: BLE001 - it is out of the pool either way
                    log.warning("pool %s: terminating idle overflow member %s failed: %s", self.id, m.key, exc)
                self.counts["reaped"] += 1
        if any(m.overflow and m.state is State.IDLE for m in self.members.values()):
            self.reap_armed = True
            self.send_after(self.overflow_ttl / 2, _REAP)

    def expire(self, now: float) -> float | None:
        nxt = None
        for r in list(self.waiting):
            if r.deadline is not None and r.deadline <= now:
                self.waiting.remove(r)
                self._forget_holder(r.holder, None)
                self.reply_error(r.token, PoolTimeout(self._busy_text()))
            elif r.deadline is not None and (nxt is None or r.deadline < nxt):
                nxt = r.deadline
        return nxt
