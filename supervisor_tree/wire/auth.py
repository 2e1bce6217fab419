"""Frame authentication: the run's secret (RUN/key) and the tag every frame carries.

Owns the trust model's mechanism (README, "Security and trust"): a node makes a
fresh 32-byte secret when it starts, writes it 0600 to RUN/key *before* it starts the
fork server, and keeps it in memory, so the fork server and every worker inherit it
across fork() and never read the file.  A client of another process reads RUN/key,
which it trusts only when its own user owns it and nobody else can read it.  Every
frame on a socket of the run ends with a 16-byte tag of everything before it; a
receiver checks the tag before it decodes a single byte (`verify`), so bytes from
anyone without the key are never unpickled, never parsed, never answered.

    key = create_key(run_dir)          # the node, before the fork server
    key = key_for(run_dir)             # anyone: the key this process holds, else RUN/key
    frame = key.seal(b"S" + body)      # body + tag
    n = key.verify(frame)              # len(body), or -1: drop the frame unread

The tag: keyed BLAKE2b-128 for bodies up to 2 KiB (0.4 µs for 64 B here, a third of
HMAC-SHA256's cost), HMAC-SHA256 truncated to 128 bits above (SHA extensions make it
the faster one for large bodies); each under its own key derived from the secret.
Both ends pick by the body's length, which the tag covers.  Imports no socket library.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["TAG_SIZE", "KEY_FILE", "SMALL_BODY", "FrameKey", "RunKeyError", "create_key", "key_for", "held_key",
           "hold_key", "read_key", "forget_key", "UntrustedFile", "write_private", "read_private"]

TAG_SIZE = 16
SECRET_SIZE = 32
KEY_FILE = "key"
SMALL_BODY = 2048  # bodies up to this many bytes get BLAKE2b, longer ones HMAC-SHA256

_blake2b = hashlib.blake2b
_hmac_digest = hmac.digest
_same = hmac.compare_digest


class RunKeyError(Exception):
    """The run's key cannot be had or trusted; the message says which file, why, and what to do."""


class FrameKey:
    """One run's secret, as the two MACs derived from it.  Immutable; cheap to share.

    `tag`, `seal` and `verify` are closures made once per key (no attribute lookups
    on the hot path: they run twice per message, once on each side).
    """

    __slots__ = ("tag", "seal", "verify", "fingerprint")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_SIZE:
            raise ValueError(f"a run key is {SECRET_SIZE} bytes; got {len(secret)}")
        small = _blake2b(key=_derive(secret, b"frames/blake2b"), digest_size=TAG_SIZE).copy
        large = _derive(secret, b"frames/hmac-sha256")
        self.fingerprint = _derive(secret, b"fingerprint")[:4].hex()  # names a key in messages, reveals nothing

        def tag(body: bytes | memoryview) -> bytes:
            if len(body) <= SMALL_BODY:
                h = small()  # the keyed state is made once: a copy skips hashing the key block again
                h.update(body)
                return h.digest()
            return _hmac_digest(large, body, "sha256")[:TAG_SIZE]

        def seal(body: bytes) -> bytes:
            """`body` followed by its tag: what goes on the wire."""
            return body + tag(body)

        def verify(frame: bytes) -> int:
            """The length of `frame`'s body when its tag is right, else -1 (also for frames too short to hold one)."""
            n = len(frame) - TAG_SIZE
            if n < 1:
                return -1
            if n <= SMALL_BODY:
                h = small()
                h.update(frame[:n])  # a small copy costs less than a memoryview
                return n if _same(h.digest(), frame[n:]) else -1
            return n if _same(_hmac_digest(large, memoryview(frame)[:n], "sha256")[:TAG_SIZE], frame[n:]) else -1

        self.tag, self.seal, self.verify = tag, seal, verify

    def __repr__(self) -> str:
        return f"FrameKey({self.fingerprint})"


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return _blake2b(purpose, key=secret, digest_size=32).digest()


# ---------------------------------------------------------------------------
# Where a process gets its key

_held: dict[str, FrameKey] = {}  # run dir (real path) -> the key this process made or inherited at fork


def _where(run_dir: str | os.PathLike[str]) -> str:
    return os.path.realpath(run_dir)


def create_key(run_dir: str | os.PathLike[str]) -> FrameKey:
    """A fresh key for the run in `run_dir`: written 0600 to RUN/key (atomically) and held in memory.

    Call it before forking the processes that must share it (they inherit it).
    """
    secret = os.urandom(SECRET_SIZE)
    write_private(Path(run_dir) / KEY_FILE, secret)
    key = FrameKey(secret)
    _held[_where(run_dir)] = key
    return key


def key_for(run_dir: str | os.PathLike[str]) -> FrameKey:
    """The key of the run in `run_dir`: the one this process holds (made or inherited), else RUN/key's."""
    held = _held.get(_where(run_dir))
    return held if held is not None else read_key(run_dir)


def held_key(run_dir: str | os.PathLike[str]) -> FrameKey | None:
    """The key this process made or inherited for `run_dir`, if any (never reads the file)."""
    return _held.get(_where(run_dir))


def hold_key(run_dir: str | os.PathLike[str], key: FrameKey) -> None:
    """Hold `key` for `run_dir` from now on, as if made here (a process executed afresh that read RUN/key once)."""
    _held[_where(run_dir)] = key


def forget_key(run_dir: str | os.PathLike[str], remove_file: bool = False) -> None:
    """Drop the held key (the run is over); with `remove_file`, RUN/key too."""
    _held.pop(_where(run_dir), None)
    if remove_file:
        (Path(run_dir) / KEY_FILE).unlink(missing_ok=True)


def read_key(run_dir: str | os.PathLike[str]) -> FrameKey:
    """RUN/key, trusted only when this user owns it and nobody else can read or write it."""
    path = Path(run_dir) / KEY_FILE
    try:
        secret = read_private(path, SECRET_SIZE + 1, _untrusted)
    except FileNotFoundError:
        raise RunKeyError(f"{path}: no key there; no node of this version is running in {run_dir}") from None
    except UntrustedFile as exc:
        raise RunKeyError(f"{path}: {exc}") from None
    except OSError as exc:
        raise RunKeyError(f"{path}: cannot read the run's key ({exc.strerror}); "
                        "only the user who started the node can talk to it") from None  # fmt: skip
    if len(secret) != SECRET_SIZE:
        raise RunKeyError(f"{path}: a run key is {SECRET_SIZE} bytes; this file has {len(secret)} "
                        "(not written by a node: stop the node and start it again)")  # fmt: skip
    return FrameKey(secret)


def _untrusted(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file; refusing to use it as the run's key"
    if st.st_uid != os.getuid():
        return (f"owned by uid {st.st_uid}, not by you (uid {os.getuid()}); a run's key is trusted only by "
                "the user who started its node")  # fmt: skip
    if st.st_mode & 0o077:
        return (f"mode {stat.S_IMODE(st.st_mode):04o} lets others read or write it; a run's key must be 0600 "
                "(stop the node and start it again: it writes a new one)")  # fmt: skip
    return None


class UntrustedFile(Exception):
    """A private file (a key) this process must not trust; the message says why."""


def write_private(path: Path, data: bytes) -> None:
    """`data` into `path`, mode 0600, atomically: a new file beside it (never through a link), then rename."""
    tmp = path.with_name(f".{path.name}-{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_private(path: Path, limit: int, untrusted: Callable[[os.stat_result], str | None]) -> bytes:
    """Up to `limit` bytes of `path` (never through a link), once `untrusted(its stat)` found nothing wrong;
    raises UntrustedFile with what it found, OSError (FileNotFoundError) when it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        problem = untrusted(os.fstat(fd))
        if problem:
            raise UntrustedFile(problem)
        return os.read(fd, limit)
    finally:
        os.close(fd)
