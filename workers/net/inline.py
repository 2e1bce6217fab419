"""The tools of one network worker, and the ones it runs itself (inline) instead of on the pool.

Owns the worker's tool table (the built-ins of net/tools.py and the config's own
tools, `tools` in net/config.py), the functions of the tools marked `inline`
(imported at the worker's start: a task that does not import fails the start,
naming the key), and the bound on an inline call: a call that takes longer than
`inline_max_ms` (wall time: a tool that sleeps or waits stalls the loop as much as
one that computes) is answered as usual and counted (`inline_overruns`); a tool
that overran on 3 of its last 20 calls moves to the pool for this incarnation of
the worker, with a warning in the log and `inline_moved_to_pool` in the stats.
Not at the first overrun, and counted in calls, not seconds: on a busy machine the
loop thread is descheduled now and then in the middle of a cheap call (measured
here at load 8 on 2 cores: echo moved to the pool within seconds by a rule of 3
overruns a minute), which hits one call, never most calls of one tool; a tool that
is slow is slow on most of its calls.  So a tool declared cheap that is not stalls
the worker's connections three times, not on every call.  CPU-bound built-ins
are never inline (config.py refuses them).  Running a call, and turning its
value into a reply, is mcp.py's; `tools/list` is the same whatever runs inline.

    box = Toolbox.from_settings([ToolSetting("echo", inline=True)], max_ms=10.0)
    box.inline["echo"]("hi")                # 'hi': the function itself, called on the loop
    box.took("echo", 0.2, 7)                # its 7th call took 200 ms > 10 ms: 3 such of its last 20 move echo
"""

from __future__ import annotations

import collections
import importlib
import logging
from collections.abc import Callable, Iterable
from typing import cast

from supervisor_tree.workers.net.config import ToolSetting
from supervisor_tree.workers.net.tools import TOOLS, InputSchema, Tool

log = logging.getLogger(__name__)

STRIKES = 3  # overruns of one tool within its last WITHIN calls that move it to the pool
WITHIN = 20

NO_ARGUMENTS: InputSchema = {"type": "object", "properties": {}, "additionalProperties": False}


class Toolbox:
    """The worker's tools by name, and the inline ones' functions (loop thread; stats read `counts`)."""

    def __init__(self, tools: dict[str, Tool], inline: dict[str, Callable[..., object]], max_ms: float) -> None:
        self.tools = tools
        self.inline = inline
        self.max_s = max_ms / 1000
        self.counts = collections.Counter[str]()
        self.moved: list[str] = []  # inline tools that overran and run on the pool now
        self.calls = collections.Counter[str]()  # inline calls by tool (mcp.py counts them)
        self._overruns: dict[str, list[int]] = {}  # which of each tool's calls overran, within its last WITHIN

    @classmethod
    def from_settings(cls, settings: Iterable[ToolSetting] = (), max_ms: float = 10.0) -> Toolbox:
        """The built-ins with `settings` applied; raises ValueError naming the key of a task that does not import."""
        tools = dict(TOOLS)
        inline: dict[str, Callable[..., object]] = {}
        for s in settings:
            if s.task:
                schema = cast(InputSchema, dict(s.input_schema) if s.input_schema is not None else NO_ARGUMENTS)
                tools[s.name] = Tool(s.name, s.task, s.description, schema, s.chunk)
            if s.inline:
                inline[s.name] = import_task(tools[s.name].task, f"tools.{s.name}.task")
        return cls(tools, inline, max_ms)

    def took(self, name: str, seconds: float, call: int) -> None:
        """The `call`-th inline call of `name` took `seconds` (the caller may skip calls within the bound)."""
        if seconds <= self.max_s or name not in self.inline:
            return
        self.counts["inline_overruns"] += 1
        recent = [n for n in self._overruns.get(name, ()) if n > call - WITHIN] + [call]
        self._overruns[name] = recent
        if len(recent) < STRIKES:
            return
        del self.inline[name]
        self.moved.append(name)
        self.counts["inline_moved_to_pool"] += 1
        log.warning("network: inline tool %r took %.1f ms, over inline_max_ms = %g on %d of its last %d calls; it "
                    "runs on the pool from now on (until this worker restarts); set tools.%s.inline = false if it "
                    "is not cheap", name, seconds * 1000, self.max_s * 1000, len(recent), min(call, WITHIN), name)  # fmt: skip


def import_task(task: str, where: str) -> Callable[..., object]:
    """The function `task` ("module:function") names; a ValueError naming `where` when it does not import."""
    module, _, qualname = task.partition(":")
    try:
        obj: object = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the config's error, told at start
        raise ValueError(f'network args: {where}: cannot import "{task}": {type(exc).__name__}: {exc}') from None
    if not callable(obj):
        raise ValueError(f'network args: {where}: "{task}" is a {type(obj).__name__}, not a function')
    return cast("Callable[..., object]", obj)
