"""`supervise reload`: apply a changed config, or changed code, to the running tree.

    supervise reload [CONFIG] [--dry-run] [--json]       # CONFIG: default, the node's own
    supervise reload --code [WORKER|GLOB...] [--dry-run]

Validates the config here first (as `check` does: exit 2 and one line per problem,
nothing changes), then asks the node for the plan and, without --dry-run, waits
while the node carries it out.  Exit 1 when a step fails (the tree keeps running;
the output says what was applied and what was not).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from supervisor_tree.cli.common import (
    EXIT_FAILED,
    EXIT_NO_NODE,
    EXIT_USAGE,
    Ctx,
    config_option,
    emit,
    fail,
    json_option,
    load_spec,
    run_client,
    run_dir_option,
)
from supervisor_tree.wire import rundir


@click.command(short_help="Apply a changed config or code, touching only what changed.")
@click.argument("targets", nargs=-1, metavar="[CONFIG | --code WORKER|GLOB...]")
@click.option("--code", is_flag=True, help="Restart, one at a time, the workers whose code changed on disk.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--timeout", default=600.0, show_default=True, help="How long to wait for the reload to finish.")
@run_dir_option
@config_option
@json_option
def reload(targets: tuple[str, ...], code: bool, dry_run: bool, timeout: float, run_dir: str | None,
           config: str | None, as_json: bool) -> None:  # fmt: skip
    """Apply CONFIG (default: the node's own) to the running tree: children added, removed or
    changed, and supervisor flags, one step at a time; unchanged children keep running.  With
    --code: restart the workers (all, or those named) whose module files changed since they
    started.  Exit 2 if the config has a problem (nothing changes), 1 if a step fails."""
    if not code and len(targets) > 1:
        fail(f"reload takes one CONFIG; got {len(targets)} ({' '.join(targets)}); workers are named with --code", EXIT_USAGE)
    new_config = None if code or not targets else os.path.abspath(targets[0])
    ctx = Ctx(_run_dir(run_dir, config, new_config), config)
    with ctx.client(timeout=30.0) as c:
        if code:
            from supervisor_tree.client.reload import code_records

            records, unmatched = run_client(lambda: code_records(c, targets))
            if unmatched:
                fail(f"no running worker matches {', '.join(map(repr, unmatched))}; see `supervise status`", EXIT_USAGE)
            value = run_client(lambda: c.control("reload_code", timeout, records=records, dry_run=dry_run))
        else:
            path = new_config or _own_config(run_client(lambda: c.control("ping")))
            if path is not None:
                load_spec(path)  # every problem, one line each, exit 2: nothing is sent
            value = run_client(lambda: c.reload(path, dry_run=dry_run, checked=True, timeout=timeout))
    if not value.get("ok") and value.get("problems"):
        for line in value["problems"]:
            click.echo(f"supervise: {line}", err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        emit(value, True)
    else:
        click.echo("\n".join(render(value)))
    if not value.get("ok"):
        failed = value["outcome"]["failed"]
        click.echo(f"supervise: reload stopped at step {failed['step']}: {failed['error']}", err=True)
        sys.exit(EXIT_FAILED)


def _run_dir(run_dir: str | None, config: str | None, new_config: str | None) -> str | None:
    """--run-dir / -c as usual; else the node of CONFIG, else the only live node."""
    if run_dir or config or os.environ.get("SUPERVISE_RUN_DIR") or new_config is None:
        return run_dir
    own = rundir.default_run_dir(new_config)
    if rundir.is_locked(own):
        return str(own)
    live = rundir.live_run_dirs()
    if len(live) == 1:
        return str(live[0])
    where = f"{len(live)} nodes run" if live else "no node runs"
    fail(f"no node runs in {own} (the run dir of {new_config}) and {where}; pass --run-dir", EXIT_NO_NODE)


def _own_config(ping: dict[str, Any]) -> str | None:
    """The node's config file, or None for the built-in tree (the node reloads that itself)."""
    from supervisor_tree.config.default_tree import EXAMPLE

    source = ping.get("config")
    return None if not source or str(source).startswith(str(EXAMPLE)) else str(source)


def render(value: dict[str, Any]) -> list[str]:
    """The plan, then (after a reload) each step's outcome, as text."""
    plan = value.get("plan") or []
    what = value.get("config") or "the workers' code" if value.get("kind") == "code" else value.get("config")
    unchanged = value.get("unchanged")
    tail = f"; {len(unchanged)} unchanged" if unchanged is not None else ""
    outcome = value.get("outcome")
    if not plan:
        lines = [f"nothing to change in {what}{tail}" if value.get("kind") == "config" else "no worker's code changed"]
    elif outcome is None:
        lines = [f"plan for {what} (dry run: nothing changed): {_steps(len(plan))}{tail}"]
        lines += [f"  {s['text']}" for s in plan]
    else:
        skipped = {s["n"]: s["why"] for s in outcome["skipped"]}
        failed = outcome["failed"] or {}
        lines = [f"reload of {what}: {len(outcome['applied'])} of {_steps(len(plan))} applied{tail}"]
        for s in plan:
            mark = "ok" if s["n"] in outcome["applied"] else "skip" if s["n"] in skipped else \
                "FAIL" if s["n"] == failed.get("n") else "-"  # fmt: skip
            note = f" ({skipped[s['n']]})" if s["n"] in skipped else ""
            lines.append(f"  {mark:<4} {s['text']}{note}")
        if failed:
            lines.append(f"  not applied: {', '.join(map(str, outcome['not_applied'])) or 'none'}; the tree keeps running")
    lines += [f"  kept (not from a config): {k}" for k in value.get("kept") or []]
    lines += [f"  note: {n}" for n in value.get("notes") or []]
    return lines


def _steps(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")


COMMANDS = [reload]
