"""Workers the component tests run in their trees (imported by the node as tests.integration.component_workers).

Named: registers a name in its init and counts what it is sent.
Mover: a queue consumer that moves items from one queue to another, acking each
batch after it was forwarded; `hold` makes it take a batch and keep it unacked.
"""

from __future__ import annotations

import os
from typing import Any

from supervisor_tree import Worker
from supervisor_tree.workers.queue import QueueClient
from supervisor_tree.workers.registry import register_self

_LOOP = ("mover", "loop")


class Named(Worker):
    def init(self, name: str, registry: str = "registry") -> None:
        self.casts = 0
        register_self(self, name, registry)

    def handle_cast(self, msg: object) -> None:
        self.casts += 1

    def handle_call(self, msg: object) -> object:
        if msg == "casts":
            return self.casts
        if msg == "info":
            return {"id": self.id, "generation": self.generation, "pid": os.getpid()}
        raise ValueError(f"Named: unknown call {msg!r}")


class Mover(Worker):
    """Moves items `source` -> `sink` in batches of `batch`: get (manual ack), put_many, ack."""

    def init(self, source: str = "jobs", sink: str = "done", batch: int = 10, running: bool = True) -> None:
        self.batch = batch
        self.held: list[Any] = []
        self.moved = 0
        self.source = QueueClient(self.client, source)
        self.sink = QueueClient(self.client, sink)
        self.running = running
        self.send_after(0, _LOOP)

    def handle_info(self, msg: object) -> None:
        if msg != _LOOP or not self.running:
            return
        tag, items = self.source.get_many(self.batch, timeout=0.05)
        if items:
            self.sink.put_many(items, timeout=10.0)
            self.source.ack(tag)
            self.moved += len(items)
        self.send_after(0, _LOOP)

    def handle_call(self, msg: object) -> object:
        if isinstance(msg, dict) and msg.get("cmd") == "hold":
            # Stop moving, take a batch and keep it unacknowledged until this process dies.
            self.running = False
            tag, items = self.source.get_many(int(msg.get("n", 5)), timeout=5.0)
            self.held = items
            return {"tag": tag, "items": items, "pid": os.getpid()}
        if msg == "moved":
            return self.moved
        raise ValueError(f"Mover: unknown call {msg!r}")
