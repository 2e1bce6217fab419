"""The retry table's control ops: `retry_sync` (clients), `retry_show` and `retry_set` (the CLI).

    retry_sync  caller, version, figures {callee: counts}, callees [...], withdraw callee|None
                -> {"version", "views": {callee: view} (when the version moved, or asked), "allowed"}
    retry_show  -> every pair's effective policy and figures, every callee's budget
    retry_set   callee, caller|None, policy {fields}|None, off, budget {fields}|None, reset
                -> the new effective policy; emits "retry_policy_changed"

Registered into `control_ops.OPS` when imported (node.py imports it), each with the JSON
types of its arguments (checked before the handler runs); policies travel as JSON
(`RetryPolicy.to_json` / `from_json`, or the config's own form for `retry_set`).  A change is
checked by the config's own validators (config/retry.py), so `retry set` refuses what
the file would refuse, with the same words.
"""

from __future__ import annotations

import time

from supervisor_tree.client.retry import Figures
from supervisor_tree.config.retry import (
    budget_from_mapping,
    describe_budget,
    describe_policy,
    policy_from_mapping,
    policy_table,
)
from supervisor_tree.node.control import ControlError, ControlServer
from supervisor_tree.node.control_ops import FLAG, NAME, STR, TABLE, op
from supervisor_tree.node.retries import RetryTable, table_of
from supervisor_tree.spec import RetryPolicy
from supervisor_tree.wire.shapes import describe, is_a

__all__ = ["table"]


def table(s: ControlServer) -> RetryTable:
    try:
        return table_of(s.extensions)
    except LookupError as exc:
        raise ControlError(str(exc)) from None


@op("retry_sync", caller=NAME, version=(int,), figures=TABLE, callees=(list, type(None)), learn=NAME, withdraw=NAME)
def _sync(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    t = table(s)
    now = time.monotonic()
    caller = str(args.get("caller") or "?")
    figures = args.get("figures") or {}
    assert isinstance(figures, dict)  # declared TABLE
    counts = set(Figures().as_dict())
    for callee, got in figures.items():
        if not (isinstance(got, dict) and set(got) <= counts and all(is_a(v, int) and v >= 0 for v in got.values())):
            raise ControlError(f"retry_sync: figures[{callee[:40]!r}] must be a table of counts "
                               f"({', '.join(sorted(counts))}: integers >= 0); got {describe(got)}")
    known = args.get("callees") or []
    if not (isinstance(known, list) and all(isinstance(c, str) for c in known)):
        raise ControlError(f"retry_sync: callees must be a list of worker ids; got {describe(known)}")
    t.sync(caller, figures, now)
    learn = [str(c) for c in known] if args.get("version") != t.version else []
    if args.get("learn"):
        learn.append(str(args["learn"]))
    answer: dict[str, object] = {"version": t.version, "views": {c: t.view(caller, c) for c in learn}}
    withdraw = args.get("withdraw")
    if withdraw is not None:
        answer["allowed"] = t.budget(str(withdraw)).withdraw(now)
    return answer


@op("retry_show")
def _show(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    return table(s).show(time.monotonic())


@op("retry_set", callee=STR, caller=NAME, policy=TABLE, off=FLAG, budget=TABLE, reset=FLAG)
def _set(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    t = table(s)
    callee = str(args.get("callee"))
    if callee not in t.worker_ids():
        raise ControlError(f"retry set: no worker {callee!r} in this tree; workers: {', '.join(t.worker_ids())}")
    caller = args.get("caller")
    caller = str(caller) if caller else None
    where = f"retry set {callee}" + (f" --caller {caller}" if caller else "")
    if args.get("reset"):
        t.reset(caller, callee)
    if args.get("off"):
        t.set_policy(caller, callee, None)
    fields = args.get("policy")
    if isinstance(fields, dict) and fields:
        base = t.effective(caller or "*", callee).policy or RetryPolicy()
        try:
            t.set_policy(caller, callee, policy_from_mapping({**policy_table(base), **fields}, where))
        except ValueError as exc:
            raise ControlError(str(exc).replace("\n", "; ")) from None
    budget_fields = args.get("budget")
    if isinstance(budget_fields, dict) and budget_fields:
        b = t.budget_spec(callee)
        merged = {"ratio": b.ratio, "window": b.window, "min_per_s": b.min_per_s, **budget_fields}
        try:
            t.set_budget(callee, budget_from_mapping(merged, where))
        except ValueError as exc:
            raise ControlError(str(exc).replace("\n", "; ")) from None
    eff = t.effective(caller or "*", callee)
    budget = describe_budget(t.budget_spec(callee))
    detail: dict[str, object] = {"caller": caller or "*", "policy": describe_policy(eff.policy), "budget": budget,
                                 "version": t.version}
    assert s.node.events is not None
    rec = s.node.by_id.get(callee)
    s.node.events.emit("retry_policy_changed", supervisor=rec.sup if rec else None, child=callee, detail=detail)
    return {"callee": callee, "caller": caller or "*", "policy": describe_policy(eff.policy), "source": eff.source,
            "retry": None if eff.policy is None else policy_table(eff.policy), "budget": budget, "version": t.version}
