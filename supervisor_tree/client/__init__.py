"""Talk to a running tree: `Client` (calls, casts, names, the dynamic API), its errors, retry policies.

    from supervisor_tree.client import Client

    with Client(run_dir) as c:
        c.call("counter", ("add", 1))

Imports the wire and the vocabulary, never the node: a client runs in any process.
"""

from supervisor_tree.client.client import Client, Target, find_run_dir
from supervisor_tree.client.errors import (
    CalleeExited,
    CallError,
    CallTimeout,
    ClientError,
    ControlRefused,
    NodeNotRunning,
    NotAWorker,
    UntrustedRunDir,
)
from supervisor_tree.wire.channel import Caller, PeerBusy, PeerUnavailable, RemoteError

__all__ = [
    "Client",
    "Target",
    "Caller",
    "RemoteError",
    "PeerUnavailable",
    "PeerBusy",
    "find_run_dir",
    "ClientError",
    "NodeNotRunning",
    "UntrustedRunDir",
    "ControlRefused",
    "CallTimeout",
    "CalleeExited",
    "CallError",
    "NotAWorker",
]
