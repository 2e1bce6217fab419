"""The control operations that start a reload, and SIGHUP: a changed config, or changed code.

    reload       {path, dry_run, checked}  a config (path None: the node's own); the plan,
                                            then (unless dry_run) the outcome once carried out
    reload_code  {records, dry_run}         the workers' code records (worker/code.py, asked by
                                            the client); restarts those whose files changed

The new config is validated whole before anything changes; a problem refuses the
reload with one line per problem (`{"ok": False, "problems": [...]}`).  `checked`
says the client already imported what the config names (the CLI does, as `check`
does); otherwise the node runs `supervise check` in a subprocess first, so no
user module is imported into the node and the loop never waits.  SIGHUP reloads
the node's own config that way.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from supervisor_tree.config.default_tree import EXAMPLE, default_node_spec
from supervisor_tree.config.diff import diff, explicit_heartbeats
from supervisor_tree.config.load import ConfigError, load_config
from supervisor_tree.node.control import DEFERRED, ControlError, ControlServer
from supervisor_tree.node.control_ops import FLAG, NAME, TABLE, op
from supervisor_tree.node.reload import Answer, Job, ReloadService
from supervisor_tree.node.reload_plan import WorkerCode, bind, code_plan, running_spec, step_json
from supervisor_tree.otp import supervisor as sv

logger = logging.getLogger("supervisor_tree")

__all__ = ["begin_config", "begin_code", "on_hup"]

CHECK_TIMEOUT = 120.0


def _service(s: ControlServer) -> ReloadService:
    for ext in s.extensions:
        if isinstance(ext, ReloadService):
            return ext
    raise ControlError("this node does not reload (no reload service)")


def _answer(s: ControlServer, ident: bytes, req_id: int) -> Answer:
    return lambda ok, value: s._send(ident, req_id, ok, value)


@op("reload", path=NAME, dry_run=FLAG, checked=FLAG)
def _reload(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    service = _service(s)
    why = service.busy()
    if why:
        raise ControlError(f"reload refused: {why}")
    path = args.get("path")
    if path is not None and not isinstance(path, str):
        raise ControlError(f"reload: path must be a config file's path; got {path!r}")
    return begin_config(service, path, bool(args.get("dry_run")), bool(args.get("checked")), _answer(s, ident, req_id))


@op("reload_code", records=TABLE, dry_run=FLAG)
def _reload_code(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    service = _service(s)
    why = service.busy()
    if why:
        raise ControlError(f"reload refused: {why}")
    records = args.get("records")
    if not isinstance(records, Mapping):
        raise ControlError(f"reload_code: records must map worker ids to code records; got {type(records).__name__}")
    return begin_code(service, records, bool(args.get("dry_run")), _answer(s, ident, req_id))


def on_hup(service: ReloadService) -> None:
    """SIGHUP: reload the node's own config (checked in a subprocess first)."""
    why = service.busy()
    if why:
        _refused(service, [f"SIGHUP ignored: {why}"])
        return
    logger.info("SIGHUP: reloading %s", service.node.spec.source or "the built-in tree")
    begin_config(service, None, dry_run=False, checked=False, answer=None)


# ---------------------------------------------------------------------- a config


def _is_default(source: str | None) -> bool:
    return source is None or source.startswith(str(EXAMPLE))


def begin_config(service: ReloadService, path: str | None, dry_run: bool, checked: bool, answer: Answer | None) -> object:
    """The plan (dry_run), or DEFERRED with the reload under way; a refusal as a value."""
    source = path or service.node.spec.source
    if checked or _is_default(source):
        return _checked(service, source, dry_run, answer)
    assert source is not None
    err = Path(service.node.run_dir) / "reload-check.err"
    with open(err, "wb") as stderr:  # `supervise check`: imports what the config names, in a process of its own
        proc = subprocess.Popen([sys.executable, "-m", "supervisor_tree.cli", "check", source],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
    deadline = time.monotonic() + CHECK_TIMEOUT
    service.pending, service.checker = f"supervise check {source}", proc

    def watch() -> bool:
        code = proc.poll()
        if code is None and time.monotonic() < deadline:
            return False
        service.pending = service.checker = None
        if code is None:
            proc.kill()
            proc.wait()
        problems = [] if code == 0 else _check_problems(err, code)
        value = _refused(service, problems) if problems else _checked(service, source, dry_run, answer)
        if value is not DEFERRED and answer is not None:
            answer(True, value)
        return True

    service.watchers.append(watch)
    service.poll_soon()
    return DEFERRED


def _check_problems(err: Path, code: int | None) -> list[str]:
    try:
        lines = [line.removeprefix("supervise: ") for line in err.read_text(errors="replace").splitlines()]
    except OSError:
        lines = []
    lines = [line for line in lines if line.strip() and not line.startswith("warning:")]
    if code is None:
        return [f"checking the config took longer than {CHECK_TIMEOUT:g}s; nothing changed"]
    return lines or [f"`supervise check` failed (exit {code}); nothing changed"]


def _checked(service: ReloadService, source: str | None, dry_run: bool, answer: Answer | None) -> object:
    node = service.node
    if service.busy():
        return _refused(service, [f"reload refused: {service.busy()}"])
    try:
        new = default_node_spec() if _is_default(source) else load_config(source, check_imports=False)  # type: ignore[arg-type]
    except ConfigError as exc:
        return _refused(service, exc.problems)
    states = {path: run.state for path, run in node.sups.items()}
    target = new
    if new.heartbeat != node.spec.heartbeat:  # the workers it starts beat at the new interval at once
        target = replace(new, tree=explicit_heartbeats(new.tree, new.heartbeat))
    changes = diff(running_spec(states, node.spec), target, frozenset(service.declared))
    if changes.problems:
        return _refused(service, list(changes.problems))
    steps = bind(changes, states, new.preload)
    summary: dict[str, object] = {
        "config": new.source,
        "unchanged": [f"{p}/{c}" for p, c in changes.unchanged],
        "kept": [f"{p}/{c}" for p, c in changes.kept],
        "notes": list(changes.notes),
    }
    if dry_run or not steps:
        if not steps and not dry_run:
            node.spec = new  # nothing to carry out (a note's setting at most)
        return {"ok": True, "kind": "config", "dry_run": dry_run, **summary, "plan": [step_json(s) for s in steps],
                "outcome": None if dry_run else {"applied": [], "skipped": [], "failed": None, "not_applied": []}}  # fmt: skip
    service.start(Job("config", steps, answer, new, summary))
    return DEFERRED


def _refused(service: ReloadService, problems: list[str]) -> dict[str, object]:
    assert service.node.events is not None
    service.node.events.emit("reload_refused", supervisor="root", reason=problems[0] if problems else None,
                             detail={"problems": problems})  # fmt: skip
    for line in problems:
        logger.warning("reload refused: %s", line)
    return {"ok": False, "problems": problems}


# ---------------------------------------------------------------------- code


def begin_code(service: ReloadService, records: Mapping[object, object], dry_run: bool, answer: Answer | None) -> object:
    node = service.node
    code = getattr(node.launcher, "code", None)
    if code is None:
        return _refused(service, ["this node's launcher has no fork server: no code snapshot to compare with"])
    assert node.control is not None
    workers, notes = [], []
    for worker_id, rec in sorted(records.items(), key=lambda kv: str(kv[0])):
        found = node.control.find_child(str(worker_id))
        if not isinstance(rec, Mapping) or found is None:
            notes.append(f"{worker_id}: not compared ({'no longer in the tree' if found is None else 'no code record'})")
            continue
        path, info = found
        if "error" in rec:
            notes.append(f"{worker_id}: not compared (no code record: {rec['error']})")
            continue
        if rec.get("generation") != info.generation or info.status is not sv.ChildStatus.RUNNING:
            notes.append(f"{worker_id}: not compared (restarted since it was asked: it runs the code of that start)")
            continue
        workers.append(WorkerCode(path, info.key, info.generation, info.spec, int(rec["epoch"]),
                                  tuple(rec["inherited"]), dict(rec["own"])))  # fmt: skip
    order = {key: i for i, key in enumerate(_start_order(service))}
    workers.sort(key=lambda w: order.get(w.key, len(order)))
    steps, more, problems = code_plan(workers, code.files, code.epoch, service.hashes, node.spec.preload, code.own)
    if problems:
        return _refused(service, problems)
    summary: dict[str, object] = {"compared": [w.key for w in workers], "notes": notes + more}
    if dry_run or not steps:
        return {"ok": True, "kind": "code", "dry_run": dry_run, **summary, "plan": [step_json(s) for s in steps],
                "outcome": None if dry_run else {"applied": [], "skipped": [], "failed": None, "not_applied": []}}  # fmt: skip
    service.start(Job("code", steps, answer, None, summary))
    return DEFERRED


def _start_order(service: ReloadService) -> list[str]:
    """Every child key, depth first in start order (a code reload restarts in that order)."""
    out: list[str] = []

    def walk(path: str) -> None:
        run = service.node.sups.get(path)
        if run is None:
            return
        for child in run.state.children:
            out.append(child.key)
            walk(f"{path}/{child.key}")

    walk("root")
    return out
