"""The asyncio client, by its public name: `supervisor_tree.aio.Client`.

    import asyncio
    from supervisor_tree.aio import Client

    async def main(run_dir: str) -> None:
        async with Client(run_dir) as c:
            print(await c.call("counter", ("add", 1)))
            print(await c.call_many("counter", [("add", 1)] * 100))

    asyncio.run(main("/tmp/supervise-0/default"))

The sync `supervisor_tree.client.Client`'s API as awaitables; one implementation,
`client/aio.py` (where `AsyncClient` is the same class).  Its errors are the sync
client's (`supervisor_tree.client.CalleeExited`, `CallTimeout`, ...), re-exported here.
"""

from supervisor_tree.client.aio import AsyncClient, Client
from supervisor_tree.client.errors import (
    CalleeBusy,
    CalleeExited,
    CalleeUnavailable,
    CallError,
    CallTimeout,
    ClientError,
    ControlRefused,
    NodeNotRunning,
    NotAWorker,
    UntrustedRunDir,
)

__all__ = [
    "Client",
    "AsyncClient",
    "ClientError",
    "CalleeBusy",
    "CalleeExited",
    "CalleeUnavailable",
    "CallError",
    "CallTimeout",
    "ControlRefused",
    "NodeNotRunning",
    "NotAWorker",
    "UntrustedRunDir",
]
