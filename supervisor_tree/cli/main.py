"""`supervise`: the command line.  Parses, calls the library, maps errors to exit codes.

One module per family of commands, each listing its click commands in COMMANDS:
lifecycle (check, start, stop), tree (status, events, call, cast, kill, the dynamic
API), logs, reload, observe (top, health, queues, memwatch), serve (metrics, dashboard, console), profile, and bench
(below).  Exit codes are in `common`.
"""

from __future__ import annotations

import sys
import warnings
from typing import TextIO

import click

from supervisor_tree.cli import lifecycle, logs, observe, reload, serve, tree
from supervisor_tree.cli.common import EXIT_USAGE, fail
from supervisor_tree.cli.profile import profile_command
from supervisor_tree.wire import rundir


class _Group(click.Group):
    """Bad usage is one line and exit 2: a run dir this user must not use, or what click refuses to parse."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except rundir.RunDirError as exc:
            fail(str(exc), EXIT_USAGE)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "supervise"
            fail(f"{exc.format_message()} (see `{where} --help`)", EXIT_USAGE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Erlang/OTP supervision trees for Python workers."""
    warnings.showwarning = _one_line_warning


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: TextIO | None = None, line: str | None = None) -> None:
    """A warning as the CLI prints everything: one line, to stderr (not Python's file:line + source)."""
    click.echo(f"supervise: warning: {message}", err=True)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}, short_help="Run the benchmarks beside raw pyzmq.")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def bench(argv: tuple[str, ...]) -> None:
    """Benchmarks beside raw pyzmq references: `supervise bench [WORKLOAD...] [--quick] [--list]` (--help for more)."""
    from supervisor_tree.bench.__main__ import main as bench_main

    sys.exit(bench_main(list(argv)))


for command in [*lifecycle.COMMANDS, *tree.COMMANDS, *logs.COMMANDS, *reload.COMMANDS, *observe.COMMANDS, *serve.COMMANDS,
                profile_command, bench]:
    main.add_command(command)
