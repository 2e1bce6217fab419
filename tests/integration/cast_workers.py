"""Workers the cast-batching tests run (imported by the node as tests.integration.cast_workers)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from supervisor_tree import Worker


class Log(Worker):
    """Keeps every cast in arrival order; ("sleep", marker, s) first writes `marker`, then sleeps (the workload)."""

    def init(self) -> None:
        self.log: list[object] = []

    def handle_cast(self, msg: object) -> None:
        if isinstance(msg, tuple) and msg[:1] == ("sleep",):
            Path(str(msg[1])).write_text("sleeping")
            time.sleep(float(msg[2]))  # the workload: a busy worker whose mailbox fills meanwhile
            return
        self.log.append(msg)

    def handle_call(self, msg: object) -> object:
        return len(self.log) if msg == "seen" else list(self.log)


class AioLog(Worker):
    """The same log, as an asyncio worker."""

    async def init(self) -> None:
        self.log: list[object] = []
        await asyncio.sleep(0)

    async def handle_cast(self, msg: object) -> None:
        self.log.append(msg)

    async def handle_call(self, msg: object) -> object:
        return len(self.log) if msg == "seen" else list(self.log)
