"""The workers of examples/mixed/config.toml: an asyncio service and a plain one."""

import asyncio
import logging

from supervisor_tree import Worker

log = logging.getLogger("app")


class Fetcher(Worker):
    """An asyncio worker: each call awaits its I/O, so a hundred calls wait at once."""

    async def init(self, delay=0.2):
        self.delay = delay
        log.info("fetcher ready (delay %s s)", delay)

    async def handle_call(self, msg):
        if msg == "boom":
            raise ValueError("upstream said 502")
        if isinstance(msg, list) and msg[:1] == ["via"]:
            return await self.call(msg[1], msg[2])  # another worker, the loop never blocked
        await asyncio.sleep(self.delay)  # a database query, an HTTP request...
        return {"fetched": msg}


class Audit(Worker):
    def init(self):
        self.seen = 0

    def handle_call(self, msg):
        self.seen += 1
        print("audit saw", msg)
        return self.seen
