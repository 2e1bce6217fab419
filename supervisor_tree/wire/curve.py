"""CurveZMQ for the sockets of a tree that spans hosts: the tree's keys, and the sockets' setup.

A tree whose workers run on other hosts (`[node] backend = "ray"`) speaks ZeroMQ over
TCP.  There, the run dir's 0700 does not keep anyone out, so every TCP socket of the
tree is a CurveZMQ socket: encrypted, and a connection is accepted only from a peer
that holds the tree's client key (checked by a ZAP handler in each process, `Gate`).
A refused peer never gets a frame through, so nothing it sends is parsed, let alone
unpickled; the frame tags of `auth` stay on every frame as well (two locks, two keys).

The keys: one server pair (every bound TCP socket of the tree: the node's control and
inbound, each worker's mailbox and control, a caller's reply socket) and one client
pair (every connecting socket), made fresh by the node each time it starts, kept 0600
in RUN/curve (four z85 lines), held in memory, and shipped to remote workers with their
start request.  Owns no socket of its own but the ZAP handler's; never decides anything
about supervision.

    keys = create_keys(run_dir)                  # the node, at start
    gate = Gate.open(ctx, keys)                  # once per process and context: refuses strangers
    serve(sock, keys); sock.bind("tcp://127.0.0.1:0")
    dial(sock, keys); sock.connect(endpoint)
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from supervisor_tree.wire.auth import UntrustedFile, read_private, write_private

__all__ = ["CURVE_FILE", "TCP_HOST_FILE", "reply_directory", "use", "in_use", "secure", "CurveKeys", "CurveKeyError", "Gate", "create_keys", "read_keys", "keys_for", "held_keys",
           "hold_keys", "forget_keys", "close_gate", "serve", "dial", "is_tcp"]

CURVE_FILE = "curve"
TCP_HOST_FILE = "tcp_host"  # RUN/tcp_host: the address a client on the node's machine takes its reply socket at
ZAP_DOMAIN = "supervise"  # the domain our server sockets name; the Gate answers for it


class CurveKeyError(Exception):
    """The tree's CURVE keys cannot be had or trusted (one line: which file, why, what to do)."""


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """A tree's two CURVE key pairs, z85-encoded (40 bytes each).  Picklable: it travels to remote workers."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def generate(cls) -> CurveKeys:
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        return cls(server_public, server_secret, client_public, client_secret)

    def lines(self) -> bytes:
        return b"\n".join((self.server_public, self.server_secret, self.client_public, self.client_secret)) + b"\n"

    @property
    def fingerprint(self) -> str:
        """Names the key set in messages without revealing a secret."""
        return self.server_public[:8].decode()

    def __repr__(self) -> str:
        return f"CurveKeys({self.fingerprint}...)"


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


# ---------------------------------------------------------------------------
# Sockets


def serve(sock: zmq.Socket[Any], keys: CurveKeys) -> None:
    """Make `sock` (before its bind) a CURVE server: only peers holding the tree's client key get through (Gate)."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.server_secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler (a closed Gate) means refused, never let in


def dial(sock: zmq.Socket[Any], keys: CurveKeys) -> None:
    """Make `sock` (before its connect) a CURVE client of the tree's servers."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.client_public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.client_secret)


class Gate:
    """The ZAP handler of one ZeroMQ context: accepts the tree's client key, refuses (and counts) any other.

    Without a ZAP handler libzmq lets in any client that knows the server's public key;
    with this one a peer must also hold the client pair.  One thread per context, made
    before the first CURVE server socket binds.
    """

    def __init__(self, auth: ThreadAuthenticator, allowed: bytes) -> None:
        self._auth = auth
        self._allowed = allowed
        self._lock = threading.Lock()
        self.refused = 0  # connections refused: a wrong key, or none

    @classmethod
    def open(cls, ctx: zmq.Context[Any], keys: CurveKeys) -> Gate:
        existing = _gates.get(id(ctx))
        if existing is not None:
            return existing
        auth = ThreadAuthenticator(ctx, log=_quiet_log())
        auth.start()
        gate = cls(auth, keys.client_public)
        auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=gate)
        _gates[id(ctx)] = gate
        return gate

    def callback(self, domain: str, key: bytes) -> bool:  # pyzmq's credentials-provider interface
        if key == self._allowed:
            return True
        with self._lock:
            self.refused += 1
        return False

    def close(self) -> None:
        for ctx_id, gate in list(_gates.items()):
            if gate is self:
                del _gates[ctx_id]
        self._auth.stop()


_gates: dict[int, Gate] = {}


def close_gate(ctx: zmq.Context[Any]) -> None:
    """Stop `ctx`'s ZAP handler, if it has one (before ctx.term(), which would wait for its thread)."""
    gate = _gates.get(id(ctx))
    if gate is not None:
        gate.close()


def _quiet_log() -> Any:
    import logging

    log = logging.getLogger("supervisor_tree.wire.curve.zap")
    log.setLevel(logging.WARNING)  # pyzmq logs every decision at debug; a refusal is counted instead
    return log


_in_use: list[CurveKeys] = []  # the keys this process's tcp:// sockets use (one tree per process)


def use(keys: CurveKeys | None) -> None:
    """From now on every tcp:// socket this process binds or connects through `channel` uses `keys` (None: none)."""
    _in_use[:] = [keys] if keys is not None else []


def in_use() -> CurveKeys | None:
    return _in_use[0] if _in_use else None


def secure(sock: zmq.Socket[Any], endpoint: str, *, server: bool) -> None:
    """Before `sock` binds (`server`) or connects to `endpoint`: CURVE when it is tcp://, else nothing.

    Raises ValueError for a tcp:// endpoint while this process holds no keys: the tree
    never speaks plain TCP."""
    if not is_tcp(endpoint):
        return
    keys = in_use()
    if keys is None:
        raise ValueError(f"{endpoint}: a tcp:// endpoint needs the tree's CURVE keys, and this process holds none "
                         "(curve.use(keys_for(run_dir)) first)")
    if server:
        Gate.open(sock.context, keys)
        serve(sock, keys)
    else:
        dial(sock, keys)


# ---------------------------------------------------------------------------
# Where a process gets the keys

_held: dict[str, CurveKeys] = {}


def _where(run_dir: str | os.PathLike[str]) -> str:
    return os.path.realpath(run_dir)


def create_keys(run_dir: str | os.PathLike[str]) -> CurveKeys:
    """Fresh keys for the tree in `run_dir`: written 0600 to RUN/curve (atomically) and held in memory."""
    keys = CurveKeys.generate()
    write_private(Path(run_dir) / CURVE_FILE, keys.lines())
    _held[_where(run_dir)] = keys
    return keys


def hold_keys(run_dir: str | os.PathLike[str], keys: CurveKeys) -> None:
    """Hold `keys` for `run_dir` (a remote worker: they came with its start request)."""
    _held[_where(run_dir)] = keys


def held_keys(run_dir: str | os.PathLike[str]) -> CurveKeys | None:
    return _held.get(_where(run_dir))


def keys_for(run_dir: str | os.PathLike[str]) -> CurveKeys:
    """The keys this process holds for `run_dir`, else RUN/curve's."""
    held = _held.get(_where(run_dir))
    return held if held is not None else read_keys(run_dir)


def forget_keys(run_dir: str | os.PathLike[str], remove_file: bool = False) -> None:
    _held.pop(_where(run_dir), None)
    if remove_file:
        (Path(run_dir) / CURVE_FILE).unlink(missing_ok=True)


def read_keys(run_dir: str | os.PathLike[str]) -> CurveKeys:
    """RUN/curve, trusted only when this user owns it and nobody else can read or write it."""
    path = Path(run_dir) / CURVE_FILE
    try:
        data = read_private(path, 4096, _untrusted)
    except FileNotFoundError:
        raise CurveKeyError(f"{path}: no CURVE keys there; is a node with backend = \"ray\" running in {run_dir}?") from None
    except UntrustedFile as exc:
        raise CurveKeyError(f"{path}: {exc}") from None
    except OSError as exc:
        raise CurveKeyError(f"{path}: cannot read the tree's CURVE keys ({exc.strerror}); "
                            "only the user who started the node can talk to it") from None
    parts = data.split()
    if len(parts) != 4 or any(len(p) != 40 for p in parts):
        raise CurveKeyError(f"{path}: expected four z85 keys of 40 characters, one a line; not written by a node")
    return CurveKeys(*parts)


def _untrusted(st: os.stat_result) -> str | None:
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by you (uid {os.getuid()}); refusing it"
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
        return (f"mode {stat.S_IMODE(st.st_mode):04o}; the tree's CURVE keys must be a 0600 "
                "file (stop the node and start it again: it writes new ones)")  # fmt: skip
    return None


def reply_directory(run_dir: str | os.PathLike[str]) -> str:
    """Where a client of the run in `run_dir` takes its reply address (`channel.Caller`'s directory):
    RUN/w (ipc) for a tree on this machine; tcp://HOST for a tree with workers elsewhere (RUN/tcp_host),
    whose CURVE keys this process then uses."""
    try:
        host = (Path(run_dir) / TCP_HOST_FILE).read_text().strip()
    except FileNotFoundError:
        return os.path.join(run_dir, "w")
    use(keys_for(run_dir))
    return f"tcp://{host}"
