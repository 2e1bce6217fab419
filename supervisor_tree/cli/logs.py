"""`supervise logs`: read the workers' own logs, RUN/logs/ID.log (stdout, stderr and logging records).

    supervise logs ext -n 20            # the last 20 lines of worker ext, across its incarnations
    supervise logs -f                   # every worker, following new lines and restarts (Ctrl-C ends)
    supervise logs db cache --since 10m --json

Lines of several workers are merged by time.  A `--- starting ---` line marks each
new incarnation; `--- exited: REASON ---` its end.  Works without a running node (the
files stay in the run dir); `-f` ends when the node stops.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TextIO

import click

from supervisor_tree.cli.common import (
    EXIT_FAILED,
    EXIT_NO_NODE,
    EXIT_USAGE,
    Ctx,
    config_option,
    fail,
    json_option,
    run_dir_option,
)
from supervisor_tree.node.logfile import LogLine, log_files, log_path, parse_line
from supervisor_tree.wire import rundir

__all__ = ["COMMANDS", "parse_since"]

_STYLE = {"err": "red", "log": "yellow", "sys": "cyan"}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FOLLOW_POLL_S = 0.1  # tailing files: nothing to wait on but time


def parse_since(text: str, now: float | None = None) -> float:
    """`30s`, `10m`, `2h`, `1d` ago, or a time: `14:05`, `14:05:30`, `2025-06-01T14:05`; a timestamp."""
    now = time.time() if now is None else now
    ago = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if ago:
        return now - float(ago[1]) * _UNITS[ago[2]]
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text.strip()):
        today = datetime.fromtimestamp(now).strftime("%Y-%m-%d")
        text = f"{today}T{text.strip()}"
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected a duration ago (30s, 10m, 2h, 1d) or a time "
                                 "(14:05, 2025-06-01T14:05)", param_hint="--since") from None


def _workers(run_dir: Path, asked: tuple[str, ...]) -> list[str]:
    logs = run_dir / "logs"
    known = sorted(p.name[:-4] for p in logs.glob("*.log")) if logs.is_dir() else []
    missing = [w for w in asked if w not in known]
    if missing:
        listed = ", ".join(known) or "none yet"
        fail(f"no log for worker {', '.join(repr(w) for w in missing)} in {logs} (logs: {listed})", EXIT_FAILED)
    return list(asked) or known


def _read(path: Path, since: float | None) -> list[LogLine]:
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                line = parse_line(raw)
                if line is not None and (since is None or line.ts >= since):
                    out.append(line)
    except FileNotFoundError:
        pass
    return out


def _show(line: LogLine, as_json: bool, width: int) -> None:
    if as_json:
        click.echo(json.dumps(line.to_json()))
        return
    stamp = datetime.fromtimestamp(line.ts).isoformat(timespec="milliseconds")[11:]
    who = f"{line.worker_id}#{line.generation}"
    prefix = f"{stamp} {who:<{width}} {line.stream:<3} |"
    click.echo(f"{click.style(prefix, fg=_STYLE.get(line.stream))} {line.text}")


class _Follower:
    """One worker's log file read from where it was, surviving rotation (a new file at the same name)."""

    def __init__(self, path: Path, at_end: bool) -> None:
        self.path = path
        self.file: TextIO | None = None
        self.inode = 0
        self.partial = ""
        if at_end and path.exists():
            self._open(end=True)

    def _open(self, end: bool) -> None:
        self.file = open(self.path, encoding="utf-8", errors="replace")
        self.inode = self.path.stat().st_ino
        if end:
            self.file.seek(0, 2)

    def new_lines(self) -> list[LogLine]:
        if self.file is None:
            if not self.path.exists():
                return []
            self._open(end=False)
        out = self._drain()
        try:
            rotated = self.path.stat().st_ino != self.inode
        except FileNotFoundError:
            rotated = False
        if rotated:  # what was left in the old file was just read; go on in the new one
            assert self.file is not None
            self.file.close()
            self._open(end=False)
            out += self._drain()
        return out

    def _drain(self) -> list[LogLine]:
        assert self.file is not None
        out = []
        for raw in self.file.readlines():
            if not raw.endswith("\n"):
                self.partial += raw
                continue
            line = parse_line(self.partial + raw)
            self.partial = ""
            if line is not None:
                out.append(line)
        return out


@click.command(short_help="Print the workers' own logs (stdout, stderr, logging).")
@click.argument("workers", nargs=-1)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines, across restarts, until the node stops.")
@click.option("-n", "--lines", "count", type=int, default=None, help="Only the last N lines (of all the workers shown; with -f, default 10).")
@click.option("--since", default=None, help="Only lines since: 30s, 10m, 2h, 1d ago, or a time (14:05, 2025-06-01T14:05).")
@run_dir_option
@config_option
@json_option
def logs(workers: tuple[str, ...], follow: bool, count: int | None, since: str | None, run_dir: str | None,
         config: str | None, as_json: bool) -> None:
    """WORKERS' stdout, stderr and logging records from RUN/logs/ID.log (all workers by default)."""
    if count is not None and count < 0:
        fail(f"-n must be a number of lines >= 0; got {count}", EXIT_USAGE)
    directory = Ctx(run_dir, config).run_dir
    if not (directory / "logs").is_dir() and not rundir.is_locked(directory):
        fail(f"no worker logs in {directory}: no node has run there", EXIT_NO_NODE)
    start = parse_since(since) if since else None
    if follow and count is None and start is None:
        count = 10  # as tail -f: the last lines, then what comes
    names = _workers(directory, workers)
    lines = sorted((line for w in names for p in log_files(directory, w) for line in _read(p, start)),
                   key=lambda line: line.ts)
    if count is not None:
        lines = lines[-count:] if count else []
    width = max((len(f"{w}#{line.generation}") for line in lines for w in [line.worker_id]), default=8)
    for line in lines:
        _show(line, as_json, width)
    if follow:
        _follow(directory, workers, as_json, width)


def _follow(directory: Path, asked: tuple[str, ...], as_json: bool, width: int) -> None:
    followers = {w: _Follower(log_path(directory, w), at_end=True) for w in _workers(directory, asked)}
    try:
        while True:
            if not asked:  # every worker: also those whose first incarnation starts now
                for p in (directory / "logs").glob("*.log"):
                    if p.name[:-4] not in followers:
                        followers[p.name[:-4]] = _Follower(p, at_end=False)
            fresh = sorted((line for f in followers.values() for line in f.new_lines()), key=lambda line: line.ts)
            for line in fresh:
                _show(line, as_json, width)
            if fresh:
                sys.stdout.flush()
            elif not rundir.is_locked(directory):
                return
            time.sleep(_FOLLOW_POLL_S)
    except KeyboardInterrupt:
        return


COMMANDS = [logs]
