"""A worker that leaks memory on purpose, at a steady rate: what `supervise memwatch` must flag.

    [[tree.children]]
    id = "leaky"
    start = "supervisor_tree.workers.leak:Leak"
    args = { mib_per_min = 5.0, tick = 1.0 }

Every `tick` seconds it keeps `mib_per_min * tick / 60` MiB more (touched, so it is
resident), until `cap_mib` (default 512) is held.  Calls: "held" -> MiB held so far;
"free" -> drops everything (its RSS stays high: the allocator keeps it, as a real
leak's fix would show only after a restart).
"""

from __future__ import annotations

from supervisor_tree import Worker

MIB = 2**20


class Leak(Worker):
    def init(self, mib_per_min: float = 5.0, tick: float = 1.0, cap_mib: float = 512.0) -> None:
        if not isinstance(mib_per_min, (int, float)) or mib_per_min < 0:
            raise ValueError(f"mib_per_min must be a number >= 0; got {mib_per_min!r}")
        if not isinstance(tick, (int, float)) or tick <= 0:
            raise ValueError(f"tick must be a number > 0 (seconds); got {tick!r}")
        self.per_tick = int(mib_per_min * MIB * tick / 60.0)
        self.tick = float(tick)
        self.cap = int(cap_mib * MIB)
        self.kept: list[bytearray] = []
        self.held = 0
        self.send_after(self.tick, "tick")

    def handle_info(self, msg: object) -> None:
        if msg == "tick":
            if self.held + self.per_tick <= self.cap and self.per_tick > 0:
                self.kept.append(bytearray(b"\x01" * self.per_tick))  # written, so its pages are resident
                self.held += self.per_tick
            self.send_after(self.tick, "tick")

    def handle_call(self, msg: object) -> object:
        if msg == "held":
            return round(self.held / MIB, 3)
        if msg == "free":
            self.kept.clear()
            self.held = 0
            return 0
        raise ValueError(f"leak: unknown call {msg!r}; expected \"held\" or \"free\"")

    def statistics(self) -> dict[str, object]:
        return {"held_mib": round(self.held / MIB, 3)}
