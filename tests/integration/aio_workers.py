"""Workers the asyncio, port and log tests run in their trees (imported by the node as tests.integration.aio_workers)."""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time

from supervisor_tree import Worker

log = logging.getLogger("tests.aio")


class Sleeper(Worker):
    """An asyncio worker: calls that await, a handler that raises, casts kept in order, a loop that blocks."""

    async def init(self, delay: float = 0.2, trap: bool = False) -> None:
        self.trap_exits = trap
        self.delay = delay
        self.in_flight = self.most_in_flight = self.finished = 0
        self.order: list[object] = []
        await asyncio.sleep(0)  # yield to the loop once: the handler is async in name and in fact

    async def handle_call(self, msg: object) -> object:
        match msg:
            case ["sleep", value]:
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                try:
                    await asyncio.sleep(self.delay)  # the workload: an awaited I/O wait, as a database query would be
                finally:
                    self.in_flight -= 1
                self.finished += 1
                return value
            case "boom":
                raise ValueError("boom from an async handler")
            case "figures":
                return {"in_flight": self.in_flight, "most_in_flight": self.most_in_flight, "finished": self.finished}
            case ["ask", worker_id, inner]:
                return await self.call(worker_id, inner)
            case ["tell", worker_id, inner]:
                self.cast(worker_id, inner)
                return "told"
            case ["await", seconds]:
                await asyncio.sleep(seconds)  # the workload: an awaited wait of the caller's length
                return "awaited"
            case ["block", seconds]:
                time.sleep(seconds)  # blocks the loop: no heartbeats meanwhile
                return "blocked"
            case "order":
                return self.order
        return ["unknown", msg]

    async def handle_cast(self, msg: object) -> None:
        if msg == "stop":
            self.stop("normal")
            return
        await asyncio.sleep(random.random() / 1000)  # casts that await still run one at a time, in order
        self.order.append(msg)

    async def terminate(self, reason: object) -> None:
        await asyncio.sleep(0)  # yield to the loop once: the handler is async in name and in fact
        print(f"terminate: {reason}; finished {self.finished}, in flight {self.in_flight}", flush=True)


class Echo(Worker):
    """A plain worker: echoes calls, and counts the casts it got."""

    def init(self) -> None:
        self.casts: list[object] = []

    def handle_call(self, msg: object) -> object:
        if msg == "casts":
            return self.casts
        return ["echo", msg]

    def handle_cast(self, msg: object) -> None:
        self.casts.append(msg)


class Printer(Worker):
    """Writes to stdout, stderr and logging on request (the log tests)."""

    def init(self, greeting: str = "hello") -> None:
        print(greeting)
        log.info("printer started")

    def handle_call(self, msg: object) -> object:
        match msg:
            case ["print", text]:
                print(text)
            case ["stderr", text]:
                print(text, file=sys.stderr)
            case ["log", text]:
                log.warning("%s", text)
            case ["spam", n, size]:
                for i in range(n):
                    print(f"{i:06d} " + "x" * size)
            case ["crash", text]:
                print(text, file=sys.stderr)
                raise RuntimeError(text)
        return "ok"
