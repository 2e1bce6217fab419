"""py-spy for a worker on another host (`[node] backend = "ray"`): sampled there, read here.

A placed worker's pid is its host's; py-spy must run on that host.  The node's
`host_profile` control op has the launcher run it there (a call on the worker's Ray
actor) and answers with py-spy's raw collapsed stacks, which become a `Profile` here as
a local capture's would (`pyspy.record`).  Needs nothing on the CLI's machine but the
client; py-spy (a dependency of the package) is on the worker's host with it.

    profile = record_on_host(client, target, options)
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from supervisor_tree.profiling.collapsed import Clock, Engine, Profile, ProfileMeta, Unit, now_iso, parse_collapsed
from supervisor_tree.profiling.errors import ProfilerError
from supervisor_tree.profiling.options import CaptureOptions

__all__ = ["record_on_host"]


class _Client(Protocol):
    def control(self, op: str, _wait: float | None = None, **args: object) -> Any: ...


class _Target(Protocol):
    @property
    def worker_id(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def generation(self) -> int: ...
    @property
    def host(self) -> str | None: ...


def record_on_host(client: _Client, target: _Target, options: CaptureOptions) -> Profile:
    """Sample `target` on its own host for `options.duration_s`; its Profile (errors name worker and host)."""
    if options.engine is not Engine.PYSPY:
        raise ProfilerError(f"worker {target.worker_id!r} runs on {target.host}: only py-spy profiles across hosts")
    started_at, t0 = now_iso(), time.monotonic()
    try:
        answer = client.control("host_profile", options.duration_s + 120, id=target.worker_id,
                                duration=options.duration_s, rate=options.rate_hz)
    except Exception as exc:  # noqa: BLE001 - ControlRefused and friends: one line naming the worker
        raise ProfilerError(f"worker {target.worker_id!r} on {target.host}: {exc}") from None
    stacks = parse_collapsed(str(answer["raw"])).stacks
    if not stacks:
        raise ProfilerError(f"py-spy took no samples of worker {target.worker_id!r} on {target.host} "
                            f"in {options.duration_s:g} s: it sat idle the whole time")
    meta = ProfileMeta(engine=Engine.PYSPY, worker_id=target.worker_id, pid=target.pid, generation=target.generation,
                       duration_s=round(min(time.monotonic() - t0, options.duration_s), 3),
                       samples=int(sum(stacks.values())), started_at=started_at, rate_hz=options.rate_hz,
                       clock=Clock.CPU, unit=Unit.SAMPLES, extra={"host": str(answer.get("host"))})
    return Profile(stacks, meta)
