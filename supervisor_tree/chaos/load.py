"""The load a chaos run drives through the tree, counted end to end by sequence number.

Owns the loader threads (one `Client` each, named `chaos-load-N` in the node's retry
figures), the built-in workloads and the ledger of outcomes.  Every request carries a
sequence number; a reply must carry it back (an echo), so each request is counted once
as exactly one of: succeeded, failed (a definite error: the callee's answer, a give-up,
a refused retry), lost (no outcome by the end, or a reply that carried another
request's number: its own answer never came) or duplicated (a number answered twice).
`retried` counts the succeeded and failed requests that took more than one attempt.

Workloads (`--load`): "components" (the default tree's components: registry whereis,
session update+get, queue depth, pool run echo, the network's JSON-RPC ping over TCP),
"echo" (the puppet's echo, on every target), "none", or "module:function": a user's
`function(client, seq) -> object`, called in a loop; return the seq the worker echoed
to have it checked, or None.  Only idempotent requests are in the built-in workloads:
the queue's put and get are not (a retry could move an item twice) and are left out.

    load = Load(run_dir, ops_for("components", status), threads=4, rate=400)
    load.start(); ...; figures = load.stop()
"""

from __future__ import annotations

import importlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor_tree.client import Client, ClientError

__all__ = ["Op", "Load", "LoadFigures", "ops_for", "LoadError", "CALL_TIMEOUT"]

CALL_TIMEOUT = 5.0
Send = Callable[[Client, int, dict[str, Any]], object]  # (client, seq, the loader's own state) -> echoed seq | None


class LoadError(ValueError):
    """A --load that names no workload and no importable function."""


@dataclass(frozen=True, slots=True)
class Op:
    name: str
    worker: str
    send: Send


@dataclass(slots=True)
class LoadFigures:
    sent: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # "op: reason" -> count
    latencies_us: list[int] = field(default_factory=list)
    per_worker: dict[str, Counter[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"sent": self.sent, "succeeded": self.succeeded, "retried": self.retried, "failed": self.failed,
                "lost": self.lost, "duplicated": self.duplicated, "failures": dict(self.failures.most_common()),
                "per_worker": {w: dict(c) for w, c in sorted(self.per_worker.items())}}

    @property
    def success_pct(self) -> float:
        return 100.0 * self.succeeded / self.sent if self.sent else 100.0


# -- the built-in workloads ---------------------------------------------------------


def _echo(worker: str) -> Send:
    def send(c: Client, seq: int, state: dict[str, Any]) -> object:
        return c.call(worker, {"cmd": "echo", "value": seq}, timeout=CALL_TIMEOUT)
    return send


def _registry(c: Client, seq: int, state: dict[str, Any]) -> object:
    c.call("registry", ("whereis", "chaos.probe"), timeout=CALL_TIMEOUT)
    return None  # nothing to echo: an answer is the check


class SessionGone(ClientError):
    """The session this loader wrote to is gone: the session worker restarted (its store is in memory)."""


def _session(c: Client, seq: int, state: dict[str, Any]) -> object:
    sid = state.get("sid")
    if sid is None:
        sid = state["sid"] = c.call("session", ("create", {"seq": 0}), timeout=CALL_TIMEOUT)
    wrote, data = c.call("session", ("batch", [("update", sid, {"seq": seq}), ("get", sid)]), timeout=CALL_TIMEOUT,
                         idempotent=True)  # an update and a read: the same state when repeated
    if not wrote:
        state.pop("sid", None)
        raise SessionGone(f"session {sid} is gone (the session worker restarted)")
    return data.get("seq") if isinstance(data, dict) else data


def _queue(c: Client, seq: int, state: dict[str, Any]) -> object:
    c.call("queue", ("depth",), timeout=CALL_TIMEOUT)
    return None


def _pool(c: Client, seq: int, state: dict[str, Any]) -> object:
    return c.call("pool", ("run", "echo", [seq]), timeout=CALL_TIMEOUT, idempotent=True)  # echo is idempotent


def _network(port: int) -> Send:
    def send(c: Client, seq: int, state: dict[str, Any]) -> object:
        deadline = time.monotonic() + CALL_TIMEOUT
        tries = 0
        while True:
            tries += 1
            try:
                conn = state.get("conn")
                if conn is None:
                    conn = state["conn"] = socket.create_connection(("127.0.0.1", port), timeout=1.0)
                    state["file"] = conn.makefile("rb")
                conn.sendall(json.dumps({"jsonrpc": "2.0", "id": seq, "method": "ping"}).encode() + b"\n")
                line = state["file"].readline()
                if not line:
                    raise ConnectionError("the server closed the connection")
                state["tries"] = tries
                return json.loads(line).get("id")
            except OSError as exc:
                for key in ("file", "conn"):
                    item = state.pop(key, None)
                    if item is not None:
                        item.close()
                if time.monotonic() >= deadline:
                    raise NetworkDown(f"network on 127.0.0.1:{port}: {exc}") from None
                time.sleep(min(0.05 * tries, 0.2))  # back off before reconnecting; the listener is restarting
    return send


class NetworkDown(ClientError):
    pass


COMPONENTS: dict[str, Send] = {"registry": _registry, "session": _session, "queue": _queue, "pool": _pool}


def _network_port(status: dict[str, Any]) -> int | None:
    def walk(view: dict[str, Any]) -> int | None:
        for c in view.get("children", ()):
            if c.get("supervisor"):
                port = walk(c["supervisor"])
                if port:
                    return port
            address = (c.get("stats") or {}).get("worker", {}).get("address") if isinstance(c.get("stats"), dict) else None
            if isinstance(address, dict) and address.get("port"):
                return int(address["port"])
        return None
    return walk(status.get("tree") or {})


def ops_for(load: str, workers: list[str], status: dict[str, Any], targets: tuple[str, ...] = ()) -> list[Op]:
    """The ops of a workload, for the workers this tree has."""
    if load == "none":
        return []
    if load == "echo":
        return [Op(f"{w}.echo", w, _echo(w)) for w in (targets or workers)]
    if load == "components":
        ops = [Op(f"{w}.{fn.__name__.strip('_')}", w, fn) for w, fn in COMPONENTS.items() if w in workers]
        port = _network_port(status)
        if port is not None:
            ops.append(Op("network.ping", "network.1", _network(port)))
        if not ops:
            raise LoadError(f"--load components: this tree has none of {', '.join(COMPONENTS)} (try --load echo, "
                            "none, or module:function)")
        return ops
    if ":" in load:
        module, _, name = load.partition(":")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise LoadError(f"--load {load}: cannot import it ({type(exc).__name__}: {exc})") from None
        return [Op(load, "", lambda c, seq, state: fn(c, seq))]
    raise LoadError(f"--load {load!r}: expected components, echo, none or module:function")


# -- the loaders --------------------------------------------------------------------


class Load:
    """`threads` loaders, each a closed loop paced to `rate`/threads requests a second."""

    def __init__(self, run_dir: Path, ops: list[Op], threads: int = 4, rate: float = 400.0,
                 caller: str = "chaos-load") -> None:
        self.run_dir, self.ops, self.rate, self.caller = run_dir, ops, rate, caller
        self.n = threads if ops else 0
        self._stop = threading.Event()
        self._figures = [LoadFigures() for _ in range(self.n)]
        self._inflight: list[int | None] = [None] * self.n
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"chaos-load-{i}", daemon=True)
                         for i in range(self.n)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, drain: float = CALL_TIMEOUT + 2) -> LoadFigures:
        """Stop sending, wait `drain` s for the requests in flight; what is still out is lost."""
        self._stop.set()
        deadline = time.monotonic() + drain
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        total = LoadFigures()
        for i, f in enumerate(self._figures):
            if self._threads[i].is_alive() and self._inflight[i] is not None:
                f.lost += 1
                f.failures["lost: no answer by the end of the run"] += 1
            for name in ("sent", "succeeded", "retried", "failed", "lost", "duplicated"):
                setattr(total, name, getattr(total, name) + getattr(f, name))
            total.failures.update(f.failures)
            total.latencies_us.extend(f.latencies_us)
            for w, c in f.per_worker.items():
                total.per_worker.setdefault(w, Counter()).update(c)
        return total

    def _run(self, i: int) -> None:
        f = self._figures[i]
        state: dict[str, Any] = {}
        answered: set[int] = set()
        period = self.n / self.rate if self.rate > 0 else 0.0
        next_at = time.monotonic()
        seq = 0
        with Client(self.run_dir, caller=f"{self.caller}-{i}", timeout=CALL_TIMEOUT) as client:
            while not self._stop.is_set():
                if period:
                    next_at += period
                    pause = next_at - time.monotonic()
                    if pause > 0 and self._stop.wait(pause):  # pacing: the load's rate is the point
                        break
                op = self.ops[seq % len(self.ops)]
                seq += 1
                self._inflight[i] = seq
                f.sent += 1
                self._one(client, op, seq, state, answered, f)
                self._inflight[i] = None

    def _one(self, client: Client, op: Op, seq: int, state: dict[str, Any], answered: set[int],
             f: LoadFigures) -> None:
        per = f.per_worker.setdefault(op.worker or op.name, Counter())
        per["sent"] += 1
        client.last_attempts = 0
        state["tries"] = 1
        t0 = time.perf_counter_ns()
        try:
            echoed = op.send(client, seq, state)
        except Exception as exc:  # noqa: BLE001 - every outcome is counted; a user's load may raise anything
            f.failed += 1
            per["failed"] += 1
            f.failures[f"{op.name}: {type(exc).__name__}"] += 1
            if max(client.last_attempts, state.get("tries", 1)) > 1:
                f.retried += 1
            return
        f.latencies_us.append((time.perf_counter_ns() - t0) // 1000)
        if max(client.last_attempts, state.get("tries", 1)) > 1:
            f.retried += 1
            per["retried"] += 1
        if echoed is None or echoed == seq:
            f.succeeded += 1
            per["succeeded"] += 1
            if echoed is not None:
                answered.add(seq)
        elif isinstance(echoed, int) and echoed in answered:
            f.duplicated += 1
            per["duplicated"] += 1
            f.failures[f"{op.name}: answered {echoed} again (duplicate)"] += 1
        else:
            f.lost += 1
            per["lost"] += 1
            f.failures[f"{op.name}: got another request's answer ({echoed!r})"] += 1
