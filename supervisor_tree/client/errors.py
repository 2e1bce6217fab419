"""The exceptions a client raises on purpose, in one tree.

    ClientError                 base of everything below
    ├── NodeNotRunning          no node answers on the run dir's control socket
    ├── UntrustedRunDir         the run's key cannot be read or trusted (another user's, readable by others)
    ├── ControlRefused          the node answered a control request with an error
    ├── CallTimeout             no reply within the timeout (also a TimeoutError)
    ├── CalleeExited            the callee's incarnation died before it replied
    ├── NotAWorker              the child is an external program: no calls, casts or control
    └── CallError               the worker answered with an error (its handler raised,
                                or it could not decode the message)

Owns nothing but these types: the client, the profiler and the components raise and
catch them, so this module imports only the wire's error record.

    >>> str(CallTimeout("no reply from 'db' within 5.0 s"))
    "no reply from 'db' within 5.0 s"
"""

from __future__ import annotations

from supervisor_tree.wire.channel import RemoteError

__all__ = ["ClientError", "NodeNotRunning", "UntrustedRunDir", "ControlRefused", "CallTimeout", "CalleeExited", "CallError",
           "NotAWorker"]


class ClientError(Exception):
    """Base of everything a client raises on purpose."""


class NodeNotRunning(ClientError):
    pass


class UntrustedRunDir(ClientError):
    """The run's key (RUN/key) is missing, not this user's, or open to others; or the node's answer lacks it."""


class ControlRefused(ClientError):
    """The node answered a control request with an error (the message says why)."""


class CallTimeout(ClientError, TimeoutError):
    pass


class CalleeExited(ClientError):
    def __init__(self, worker_id: str, pid: int, generation: int, reason: object) -> None:
        super().__init__(f"worker {worker_id!r} (pid {pid}, generation {generation}) exited before replying: {reason}")
        self.worker_id, self.pid, self.generation, self.reason = worker_id, pid, generation, reason


class NotAWorker(ClientError):
    """The child runs an external program (`command`): it has no mailbox to call or cast to."""


class CallError(ClientError):
    """The worker answered with an error: its handler raised, or it could not decode the message."""

    def __init__(self, worker_id: str, error: object) -> None:
        self.worker_id = worker_id
        self.error = error
        if isinstance(error, RemoteError):
            text = f"{error.type}: {error.message}"
        else:
            text = str(error)
        super().__init__(f"worker {worker_id!r} answered with an error: {text}")
