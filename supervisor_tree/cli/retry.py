"""`supervise retry show` and `supervise retry set WORKER ...`: the tree's retry policies, live.

    $ supervise retry show
    $ supervise retry set session --attempts 5 --wait decorrelated --max 0.5
    $ supervise retry set session --caller network.1 --off          # that caller never retries it
    $ supervise retry set session --budget-ratio 0.1               # the callee's shared budget
    $ supervise retry set session --reset                          # back to the config

A change reaches every caller within a second (at its next sync with the node) and is
written to the event log as `retry_policy_changed`.  The values are checked as the
config's are (config/retry.py); a bad one exits 2 with the config's message.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from supervisor_tree.cli.common import (
    EXIT_USAGE,
    Ctx,
    config_option,
    emit,
    fail,
    json_option,
    run_client,
    run_dir_option,
)
from supervisor_tree.client import ControlRefused
from supervisor_tree.spec import RetryOn, RetryWait

__all__ = ["COMMANDS", "render_show"]


@click.group(short_help="Show or change the tree's retry policies and budgets.")
def retry() -> None:
    """Retry policies and budgets of the running tree: `show`, `set WORKER ...`."""


@retry.command("show")
@run_dir_option
@config_option
@json_option
def show(run_dir: str | None, config: str | None, as_json: bool) -> None:
    """The effective policy and budget of every caller/callee pair, with what each pair saw."""
    with Ctx(run_dir, config).client() as c:
        value = run_client(lambda: c.control("retry_show"))
    if as_json:
        emit(value, True)
    else:
        render_show(value)


def render_show(value: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=160)
    table = Table(title="retry policies (caller * = every caller without one of its own)", title_justify="left")
    for col in ("CALLER", "CALLEE", "POLICY", "SOURCE", "IDEMPOTENT", "REQ", "RETRIES", "RECOVERED", "GAVE UP",
                "REFUSED"):
        table.add_column(col, justify="right" if col in ("REQ", "RETRIES", "RECOVERED", "GAVE UP", "REFUSED") else "left")
    for p in value["pairs"]:
        f = p["figures"]
        idem = p["idempotent"]
        idem_text = "all" if idem is True else "none" if not idem else ",".join(idem)
        table.add_row(p["caller"], p["callee"], p["policy"], p["source"], idem_text, str(f["requests"]),
                      str(f["retries"]), str(f["recovered"]), str(f["gave_up"]), str(f["refused"]))
    console.print(table)
    budgets = Table(title="retry budgets (per callee, shared by every caller)", title_justify="left")
    for col in ("CALLEE", "BUDGET", "REQUESTS IN WINDOW", "RETRIES IN WINDOW", "ALLOWANCE", "REFUSED"):
        budgets.add_column(col, justify="left" if col in ("CALLEE", "BUDGET") else "right")
    for callee, b in value["budgets"].items():
        budgets.add_row(callee, b["budget"], str(b["requests_in_window"]), str(b["retries_in_window"]),
                        f"{b['allowance']:g}", str(b["refused"]))
    console.print(budgets)


def _policy_fields(attempts: int | None, wait: str | None, initial: float | None, most: float | None,
                   multiplier: float | None, jitter: bool | None, deadline: float | None,
                   per_attempt_timeout: float | None, retry_on: str | None) -> dict[str, object]:
    given = {"attempts": attempts, "wait": wait, "initial": initial, "max": most, "multiplier": multiplier,
             "jitter": jitter, "deadline": deadline, "per_attempt_timeout": per_attempt_timeout}
    fields: dict[str, object] = {k: v for k, v in given.items() if v is not None}
    if retry_on is not None:
        fields["retry_on"] = [r.strip() for r in retry_on.split(",") if r.strip()]
    return fields


@retry.command("set")
@click.argument("worker")
@click.option("--caller", default=None, help="Only for this caller (a worker id, or a client's name); default: every caller.")
@click.option("--attempts", type=int, default=None, help="Attempts in all, the first included.")
@click.option("--wait", type=click.Choice([w.value for w in RetryWait]), default=None)
@click.option("--initial", type=float, default=None, help="First wait, seconds.")
@click.option("--max", "most", type=float, default=None, help="Longest wait, seconds.")
@click.option("--multiplier", type=float, default=None, help="Growth of the exponential waits.")
@click.option("--jitter/--no-jitter", default=None, help="Add a random wait in [0, initial] (fixed, exponential).")
@click.option("--deadline", type=float, default=None, help="Seconds for all attempts and waits together.")
@click.option("--per-attempt-timeout", type=float, default=None, help="Seconds for one attempt.")
@click.option("--retry-on", default=None, help=f"Comma-separated: {', '.join(r.value for r in RetryOn)}.")
@click.option("--off", is_flag=True, help="No retries for this pair (or every caller of WORKER).")
@click.option("--reset", is_flag=True, help="Forget the live changes first: back to the config.")
@click.option("--budget-ratio", type=float, default=None, help="WORKER's retry budget: retries per request.")
@click.option("--budget-window", type=float, default=None, help="WORKER's retry budget: its window, seconds.")
@click.option("--budget-min-per-s", type=float, default=None, help="WORKER's retry budget: retries a second always allowed.")
@run_dir_option
@config_option
@json_option
def set_(worker: str, caller: str | None, attempts: int | None, wait: str | None, initial: float | None,
         most: float | None, multiplier: float | None, jitter: bool | None, deadline: float | None,
         per_attempt_timeout: float | None, retry_on: str | None, off: bool, reset: bool, budget_ratio: float | None,
         budget_window: float | None, budget_min_per_s: float | None, run_dir: str | None, config: str | None,
         as_json: bool) -> None:
    """Change WORKER's retry policy (as callee) or budget on the running tree, without a restart."""
    fields = _policy_fields(attempts, wait, initial, most, multiplier, jitter, deadline, per_attempt_timeout, retry_on)
    budget = {k: v for k, v in {"ratio": budget_ratio, "window": budget_window, "min_per_s": budget_min_per_s}.items()
              if v is not None}
    if off and fields:
        fail("retry set: --off takes no policy options (it turns retries off)", EXIT_USAGE)
    if not (fields or budget or off or reset):
        fail("retry set: nothing to change; give policy options (--attempts, --wait, ...), --off, --reset or "
             "--budget-*", EXIT_USAGE)
    with Ctx(run_dir, config).client() as c:

        def change() -> Any:
            try:
                return c.control("retry_set", callee=worker, caller=caller, policy=fields, off=off, budget=budget,
                                 reset=reset)
            except ControlRefused as exc:  # a bad value or an unknown worker: the node checked it as the config is
                fail(str(exc), EXIT_USAGE)

        value = run_client(change)
    emit(value, as_json, f"{value['caller']} -> {value['callee']}: {value['policy']} ({value['source']}); "
                         f"budget {value['budget']}")


COMMANDS = [retry]
