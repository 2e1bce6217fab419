"""Every worker's output, kept: stdout, stderr and `logging` records into RUN/logs/ID.log, one file per id.

Owns, in the node process, the reading end of each incarnation's output: two FIFOs
(RUN/w/ID-GEN.out and .err) made before the spawn and put on the new process's fds 1
and 2 (`worker/output.py`; an exec'd program inherits them).  A thread reads them and
writes each line as `logfile.format_line` says, rotating a file past `max_bytes`
(keeping `backups` old copies); in the foreground it also echoes each line, prefixed
with the worker's id and coloured per worker, as honcho does.  When the launcher
reports an incarnation reaped, the node drains its FIFOs at once (everything it wrote
is in them), notes the exit in its log, and keeps the tail of its stderr, which the
node adds to the `exited` report (`report_detail`).

    logs = LogCollector(run_dir, max_bytes=10 << 20, backups=3)
    logs.start()                                   # after the fork server exists (a thread)
    out, err = logs.open("db", 3)                  # before spawning db#3: SpawnRequest.output
    tail = logs.finish("db", 3, "killed")          # reaped: drain, close, the last stderr lines
    logs.close()

The FIFOs are opened read-write, so a reader never sees EOF and a writer never
blocks on open; the end of an incarnation comes from the launcher.  The reading
thread makes each pair ahead, under names of its own (RUN/w/.logs-spare-N.out and
.err), and `open` renames them: mkfifo(2) is slow on some filesystems, and `open`
sits on a restart's path.  Must not fork,
signal or decide anything about the worker.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import selectors
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from supervisor_tree.node.launchers.base import Reaped, SpawnFailed
from supervisor_tree.node.logfile import format_line
from supervisor_tree.wire.endpoints import drain_fd
from supervisor_tree.worker.output import LOG_MARK

if TYPE_CHECKING:
    from supervisor_tree.node.records import WorkerRec

__all__ = ["LogCollector", "TAIL_LINES"]

logger = logging.getLogger("supervisor_tree")

TAIL_LINES = 20  # stderr lines kept per incarnation for its exited report
_CHUNK = 65536
_MAX_LINE = 65536  # a longer run of bytes without a newline is written as lines of this size
TIDY_UP_DELAY = 0.012  # s after an open or a finish: past a restart's path (3 to 9 ms here), so the FIFO work stays off it
_COLOURS = ("36", "33", "32", "35", "34", "91", "96", "93", "92", "95", "94")  # honcho's cycle, ANSI
LineWatcher = Callable[[str, str], bool]  # (stream, text) -> True once satisfied (then dropped)


@dataclass(eq=False)
class _Incarnation:
    worker_id: str
    generation: int
    paths: tuple[str, str]
    fds: tuple[int, int]
    partial: dict[int, bytes] = field(default_factory=dict)
    errors: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    watchers: list[LineWatcher] = field(default_factory=list)


class _LogFile:
    """One worker's RUN/logs/ID.log, rotated by size."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self.file = open(path, "a", encoding="utf-8", errors="replace")
        self.size = self.file.tell()

    def write(self, line: str) -> None:
        self.file.write(line + "\n")
        self.size += len(line) + 1
        if self.size > self.max_bytes:
            self.rotate()

    def rotate(self) -> None:
        self.file.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self.file = open(self.path, "a", encoding="utf-8", errors="replace")
        self.size = 0

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class LogCollector:
    """See the module docstring.  Invariant: `_lock` guards every map and file below, on both threads."""

    def __init__(self, run_dir: Path, limits: Mapping[str, object] | None = None) -> None:
        self.run_dir = run_dir
        self.dir = run_dir / "logs"
        limits = limits or {}
        self.max_bytes = int(limits.get("max_bytes", 10 * 2**20))  # type: ignore[call-overload]
        self.backups = int(limits.get("backups", 3))  # type: ignore[call-overload]
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._by_fd: dict[int, tuple[_Incarnation, str]] = {}
        self._running: dict[tuple[str, int], _Incarnation] = {}
        self._files: dict[str, _LogFile] = {}
        self._tails: dict[tuple[str, int], list[str]] = {}
        self._echo: TextIO | None = None
        self._colour = False
        self._width = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._spare: tuple[tuple[str, str], tuple[int, int]] | None = None  # FIFOs made ahead (_make_spare)
        self._spares = itertools.count()
        self._gone: list[str] = []  # FIFOs of finished incarnations, for the reading thread to unlink

    def echo_to(self, stream: TextIO, colour: bool | None = None, ids: Iterable[str] = ()) -> None:
        """Also print every line to `stream`, `id#gen |`-prefixed (coloured per worker on a terminal);
        the prefixes are as wide as the longest of `ids` (the tree's) needs, so the lines align."""
        self._echo = stream
        self._colour = stream.isatty() if colour is None else colour
        self._width = max((len(i) + 2 for i in ids), default=0)

    # -- lifecycle --

    def start(self) -> None:
        """The reading thread.  After the fork server exists: a fork must never copy a running thread."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="supervise-logs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Drain and close every incarnation still open (the node is stopping), then the files."""
        self._stopping = True
        os.write(self._wake_w, b"\0")
        if self._thread is not None:
            self._thread.join(5.0)
        for key in list(self._running):
            self.finish(key[0], key[1], "node stopped")
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()
            spare, self._spare = self._spare, None
            gone, self._gone = self._gone, []
        _remove_fifos(gone, ())
        if spare is not None:
            _remove_fifos(*spare)
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    # -- incarnations --

    def open(self, worker_id: str, generation: int, announce: bool = True) -> tuple[str, str] | None:
        """FIFOs for the new incarnation's stdout and stderr, open for reading; None when they cannot be made.
        `announce` False: a start prepared ahead of its turn (node/starts.py); `announce` writes its
        "--- starting ---" at its go, or `drop` forgets it."""
        if self._thread is None:
            return None
        base = self.run_dir / "w" / f"{worker_id}-{generation}"
        paths = (f"{base}.out", f"{base}.err")
        try:
            fds = self._take_spare(paths) or _make_fifos(paths)
        except OSError as exc:
            logger.warning("worker %s#%d: cannot make its output FIFOs (%s); its output goes to the node's",
                           worker_id, generation, exc)
            return None
        inc = _Incarnation(worker_id, generation, paths, fds)
        with self._lock:
            self._running[(worker_id, generation)] = inc
            for fd, stream in zip(inc.fds, ("out", "err")):
                self._by_fd[fd] = (inc, stream)
                self._selector.register(fd, selectors.EVENT_READ)
            if announce:
                self._write(inc, "sys", "--- starting ---")
        self._wake()  # the reading thread makes the next spare pair, TIDY_UP_DELAY later
        return paths

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def _take_spare(self, paths: tuple[str, str]) -> tuple[int, int] | None:
        """The spare FIFOs renamed to `paths` (their open fds stay ours), or None when there is none."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is None:
            return None
        try:
            for src, dst in zip(spare[0], paths):
                os.rename(src, dst)  # replaces a stale FIFO of the same name, if any
        except OSError:
            _remove_fifos(spare[0] + paths, spare[1])
            return None
        return spare[1]

    def _make_spare(self) -> None:
        """In the reading thread: the next incarnation's FIFOs, made ahead under names of their own
        (mkfifo(2) is slow on some filesystems, ext4 here; rename(2) is not).  A failure is left to `open`."""
        base = self.run_dir / "w" / f".logs-spare-{next(self._spares)}"
        paths = (f"{base}.out", f"{base}.err")
        try:
            fds = _make_fifos(paths)
        except OSError:
            return
        with self._lock:
            kept = self._spare is None and not self._stopping
            if kept:
                self._spare = (paths, fds)
        if not kept:  # the node is stopping
            _remove_fifos(paths, fds)

    def announce(self, worker_id: str, generation: int) -> None:
        with self._lock:
            if (inc := self._running.get((worker_id, generation))) is not None:
                self._write(inc, "sys", "--- starting ---")

    def drop(self, worker_id: str, generation: int) -> None:
        """A start prepared ahead that did not come: its FIFOs go, nothing is written."""
        with self._lock:
            inc = self._running.pop((worker_id, generation), None)
            for fd in inc.fds if inc is not None else ():
                self._by_fd.pop(fd, None)
                self._selector.unregister(fd)
                os.close(fd)
            for path in inc.paths if inc is not None else ():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def watch(self, worker_id: str, generation: int, watcher: LineWatcher) -> bool:
        """Call `watcher(stream, text)` on each new line of that incarnation until it returns True."""
        with self._lock:
            inc = self._running.get((worker_id, generation))
            if inc is None:
                return False
            inc.watchers.append(watcher)
            return True

    def finish(self, worker_id: str, generation: int, reason: object) -> list[str]:
        """The incarnation is gone: read what is left, note the exit, close; returns its stderr tail.
        (On a restart's path: the file's flush and the FIFOs' unlink are left to the reading thread,
        TIDY_UP_DELAY later.)"""
        with self._lock:
            inc = self._running.pop((worker_id, generation), None)
            if inc is None:
                return []
            for fd, stream in zip(inc.fds, ("out", "err")):
                self._read(fd, inc, stream, until_empty=True)
                if inc.partial.get(fd):
                    self._line(inc, stream, inc.partial.pop(fd))
                self._by_fd.pop(fd, None)
                self._selector.unregister(fd)
                os.close(fd)
            self._gone.extend(inc.paths)  # unlinked by the reading thread, which also flushes the file
            self._write(inc, "sys", f"--- exited: {reason} ---")
            tail = list(inc.errors or inc.output)
            self._tails[(worker_id, generation)] = tail
            if len(self._tails) > 1000:
                self._tails.pop(next(iter(self._tails)))
        self._wake()
        return tail

    def on_launcher_event(self, ev: object, by_pid: Mapping[int, WorkerRec], by_token: Mapping[int, WorkerRec]) -> None:
        """Before the node handles a launcher event: finish the incarnation it ends."""
        rec = None
        if isinstance(ev, Reaped):
            rec = by_pid.get(ev.pid)
        elif isinstance(ev, SpawnFailed):
            rec = by_token.get(ev.token)
        if rec is not None:
            self.finish(rec.worker_id, rec.generation, "hung" if rec.hung else getattr(ev, "reason", "spawn failed"))

    def report_detail(self, event: str, child: object, generation: int | None, reason: object,
                      detail: Mapping[str, object] | None) -> dict[str, object] | None:
        """A report's detail, with the stderr tail of the incarnation that an abnormal `exited` or a
        `start_error` is about (a normal exit or a requested stop needs no explaining)."""
        out = dict(detail) if detail else None
        if event in ("exited", "start_error") and isinstance(child, str) and generation is not None:
            with self._lock:
                tail = self._tails.pop((child, generation), None)
            if tail and not getattr(reason, "is_normal", False):
                out = (out or {}) | {"tail": tail}
        return out

    # -- reading --

    def _run(self) -> None:
        due: float | None = time.monotonic()  # when to tidy up (`_tidy_up`): woken by open or finish, a bit later
        while not self._stopping:
            if due is not None and time.monotonic() >= due:
                self._tidy_up()
                due = None
            read = False
            for key, _ in self._selector.select(timeout=1.0 if due is None else max(0.0, due - time.monotonic())):
                fd = int(key.fd)
                if fd == self._wake_r:
                    drain_fd(fd)
                    due = due or time.monotonic() + TIDY_UP_DELAY
                    continue
                with self._lock:
                    found = self._by_fd.get(fd)
                    if found is not None:
                        self._read(fd, found[0], found[1], until_empty=False)
                        read = True
            if read:
                with self._lock:
                    for f in self._files.values():
                        f.flush()

    def _tidy_up(self) -> None:
        """Flush the files, unlink the FIFOs of finished incarnations, make the next spare pair."""
        with self._lock:
            for f in self._files.values():
                f.flush()
            gone, self._gone = self._gone, []
        _remove_fifos(gone, ())
        if self._spare is None:
            self._make_spare()

    def _read(self, fd: int, inc: _Incarnation, stream: str, until_empty: bool) -> None:
        while True:
            try:
                data = os.read(fd, _CHUNK)
            except BlockingIOError:
                return
            except OSError:
                return
            if not data:
                return
            buffered = inc.partial.pop(fd, b"") + data
            *lines, rest = buffered.split(b"\n")
            for line in lines:
                self._line(inc, stream, line)
            while len(rest) >= _MAX_LINE:
                self._line(inc, stream, rest[:_MAX_LINE])
                rest = rest[_MAX_LINE:]
            if rest:
                inc.partial[fd] = rest
            if not until_empty and len(data) < _CHUNK:
                return

    def _line(self, inc: _Incarnation, stream: str, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if stream == "err" and text.startswith(LOG_MARK):
            stream, text = "log", text[len(LOG_MARK):]
        (inc.output if stream == "out" else inc.errors).append(text)
        self._write(inc, stream, text)
        if inc.watchers:
            inc.watchers[:] = [w for w in inc.watchers if not _satisfied(w, stream, text)]

    def _write(self, inc: _Incarnation, stream: str, text: str) -> None:
        now = time.time()
        f = self._files.get(inc.worker_id)
        if f is None:
            f = self._files[inc.worker_id] = _LogFile(self.dir / f"{inc.worker_id}.log", self.max_bytes, self.backups)
        f.write(format_line(now, inc.worker_id, inc.generation, stream, text))
        if self._echo is not None:
            self._echo_line(now, inc, stream, text)

    def _echo_line(self, now: float, inc: _Incarnation, stream: str, text: str) -> None:
        who = f"{inc.worker_id}#{inc.generation}"
        self._width = max(self._width, len(who))
        prefix = f"{time.strftime('%H:%M:%S', time.localtime(now))} {who:<{self._width}} |"
        if stream in ("err", "sys"):
            prefix += f" {stream}:"
        if self._colour:
            colour = _COLOURS[sum(inc.worker_id.encode()) % len(_COLOURS)]
            prefix = f"\x1b[{colour}m{prefix}\x1b[0m"
        try:
            assert self._echo is not None
            self._echo.write(f"{prefix} {text}\n")
            self._echo.flush()
        except (OSError, ValueError):
            self._echo = None  # the terminal went away: the files still get every line


def _satisfied(watcher: LineWatcher, stream: str, text: str) -> bool:
    try:
        return watcher(stream, text)
    except Exception:  # a watcher's bug must not stop the logs
        logger.exception("a log line watcher failed; dropped")
        return True


def _make_fifos(paths: tuple[str, str]) -> tuple[int, int]:
    """Two FIFOs at `paths` (any old file there replaced), open read-write; raises OSError, leaving none."""
    fds: list[int] = []
    try:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.mkfifo(path, 0o600)
            fds.append(os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError:
        _remove_fifos(paths, fds)
        raise
    return fds[0], fds[1]


def _remove_fifos(paths: Iterable[str], fds: Iterable[int]) -> None:
    for fd in fds:
        os.close(fd)
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


