"""Control ops for workers placed on other hosts (`[node] backend = "ray"`): `host_profile`.

`supervise profile` samples a local worker with py-spy by its pid, from the CLI's own
process; a worker on another host has a pid of that host's, so py-spy must run there.
`host_profile` asks the launcher to run py-spy on the worker's host (the Ray launcher: a
call on the worker's actor) and answers, later, with py-spy's raw collapsed stacks.  The
node's loop never waits: the answer is deferred until the launcher's callback.

    client.control("host_profile", id="b", duration=2.0, rate=100)   # -> {"raw": "...", "host": ...}
"""

from __future__ import annotations

from supervisor_tree.node.control import DEFERRED, ControlError, ControlServer
from supervisor_tree.node.control_ops import NUMBER, STR, op


@op("host_profile", id=STR, duration=NUMBER, rate=NUMBER)
def _host_profile(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    worker_id = str(args.get("id"))
    rec = s.node.by_id.get(worker_id)
    if rec is None or rec.pid is None or rec.pid not in s.node.by_pid:
        raise ControlError(f"no live worker {worker_id!r} in this tree")
    profile_async = getattr(s.node.launcher, "profile_async", None)
    if not rec.host or profile_async is None:
        raise ControlError(f"worker {worker_id!r} runs on this machine: profile it by its pid here")
    duration = float(args.get("duration") or 10.0)  # type: ignore[arg-type]
    rate = int(args.get("rate") or 100)  # type: ignore[call-overload]
    if not 0 < duration <= 3600 or not 1 <= rate <= 10_000:
        raise ControlError(f"host_profile: duration must be in (0, 3600] s and rate in [1, 10000] Hz; got {duration}, {rate}")
    host, pid = rec.host, rec.pid

    def done(outcome: bytes | str) -> None:
        if isinstance(outcome, bytes):
            s._send(ident, req_id, True, {"raw": outcome.decode(errors="replace"), "host": host, "pid": pid})
        else:
            s._send(ident, req_id, False, f"py-spy on {host} (pid {pid}): {outcome}")

    profile_async(pid, duration, rate, done)
    return DEFERRED
