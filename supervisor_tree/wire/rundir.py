"""The run directory: where a node's sockets, event log and lock live.

Owns the layout and the choice of the default directory.  Nothing here opens
a socket.

    RUN/control      the node's control socket (ipc)
    RUN/inbound      workers -> node (ready, heartbeats)
    RUN/w/           worker mailboxes and control sockets
    RUN/reasons/     exit reasons written by workers just before they exit
    RUN/events.jsonl supervisor reports, one JSON object per line
    RUN/node.json    pid, config, start time of the node that owns the directory
    RUN/node.log     the node's log when started with --detach
    RUN/key          the run's secret (0600; `auth`): every frame of the run is tagged with it

A run dir is trusted only when this user owns it and nobody else can write to it
(`check`); `ensure` makes a missing one 0700 (its missing parents with the user's
umask, as mkdir -p would) and tightens an existing one of ours to 0700, and never
touches the mode of any other directory.

The default is per user and per config (mode 0700): ``$XDG_RUNTIME_DIR/supervise/<name>``,
else ``/dev/shm/supervise-<uid>/<name>`` (tmpfs), else ``/tmp/supervise-<uid>/<name>``, where <name> is ``default`` for the built-in
tree and ``<stem>-<hash of the config path>`` otherwise.  Paths stay short because
ipc:// endpoints are limited to 107 bytes on Linux.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path


def base_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime) / "supervise"
    shm = Path("/dev/shm")  # tmpfs: an ipc bind costs ~15 µs there against 100-300 µs on disk
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / f"supervise-{os.getuid()}"
    return Path(f"/tmp/supervise-{os.getuid()}")


def default_run_dir(config: str | os.PathLike[str] | None) -> Path:
    if config is None:
        return base_dir() / "default"
    path = Path(config).resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return base_dir() / f"{path.stem[:16]}-{digest}"


class RunDirError(Exception):
    """A run dir this user must not use: another user's, writable by others, not a directory (one line)."""


def check(run_dir: Path) -> str | None:
    """Why `run_dir` (which exists) cannot be trusted, or None: it must be a directory of this user's
    that nobody else can write to."""
    try:
        st = os.stat(run_dir)
    except OSError as exc:
        return f"cannot use it ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by you (uid {os.getuid()}); a run dir must be your own"
    if st.st_mode & 0o022:
        return f"mode {stat.S_IMODE(st.st_mode):04o} lets others write to it; a run dir must be yours alone"
    return None


def ensure(run_dir: Path) -> Path:
    """The run dir, ready to serve: made 0700 when missing (missing parents with the user's umask),
    checked (`check`) and tightened to 0700 when it exists.  Raises RunDirError (one line)."""
    run_dir = Path(run_dir)
    try:
        if not os.path.lexists(run_dir):
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(run_dir, 0o700)
            except FileExistsError:
                pass  # made meanwhile by another start: checked below like any existing one
    except OSError as exc:
        raise RunDirError(f"run dir {run_dir}: cannot create it ({exc.strerror}); choose another with "
                          "--run-dir or SUPERVISE_RUN_DIR") from None  # fmt: skip
    problem = check(run_dir)
    if problem:
        raise RunDirError(f"run dir {run_dir}: {problem}; choose another with --run-dir or SUPERVISE_RUN_DIR")
    if stat.S_IMODE(os.stat(run_dir).st_mode) != 0o700:
        os.chmod(run_dir, 0o700)
    for sub in ("w", "reasons"):
        (run_dir / sub).mkdir(mode=0o700, exist_ok=True)
    return run_dir


def endpoint(run_dir: Path, name: str) -> str:
    return f"ipc://{run_dir / name}"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    pid: int
    run_dir: str
    config: str | None
    started_at: float
    name: str


class RunDirLock:
    """An exclusive flock on RUN/lock: one node per run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def is_locked(run_dir: Path) -> bool:
    """True when a live node holds the directory's lock."""
    path = run_dir / "lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def write_info(run_dir: Path, info: NodeInfo) -> None:
    tmp = run_dir / "node.json.tmp"
    tmp.write_text(json.dumps(_asdict(info)))
    tmp.replace(run_dir / "node.json")


def read_info(run_dir: Path) -> NodeInfo | None:
    try:
        data = json.loads((run_dir / "node.json").read_text())
        return NodeInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def _asdict(info: NodeInfo) -> dict[str, object]:
    return {f: getattr(info, f) for f in info.__slots__}


def live_run_dirs() -> list[Path]:
    """Run directories under the default base that a live node holds."""
    base = base_dir()
    if not base.is_dir():
        return []
    return sorted(d for d in base.iterdir() if d.is_dir() and is_locked(d))


def clean_stale(run_dir: Path) -> None:
    """Remove sockets and reasons left by a node that died without cleaning up."""
    for sub in ("w", "reasons"):
        for f in (run_dir / sub).glob("*"):
            f.unlink(missing_ok=True)
    for name in ("control", "inbound", "events", "node.json"):
        (run_dir / name).unlink(missing_ok=True)
