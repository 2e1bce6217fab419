"""`supervise`: the command line.  Parses, calls the library, maps errors to exit codes.

One module per family of commands, each listing its click commands in COMMANDS:
lifecycle (check, start, stop), tree (status, events, call, cast, kill, the dynamic
API), profile, and bench (below).  Exit codes are in `common`.
"""

from __future__ import annotations

import sys
import warnings
from typing import TextIO

import click

from supervisor_tree.cli import chaos, lifecycle, retry, tree
from supervisor_tree.cli.profile import profile_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Erlang/OTP supervision trees for Python workers."""
    warnings.showwarning = _one_line_warning


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: TextIO | None = None, line: str | None = None) -> None:
    """A warning as the CLI prints everything: one line, to stderr (not Python's file:line + source)."""
    click.echo(f"supervise: warning: {message}", err=True)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def bench(argv: tuple[str, ...]) -> None:
    """Benchmarks beside raw pyzmq references: `supervise bench [WORKLOAD...] [--quick] [--list]` (--help for more)."""
    from supervisor_tree.bench.__main__ import main as bench_main

    sys.exit(bench_main(list(argv)))


for command in [*lifecycle.COMMANDS, *tree.COMMANDS, *retry.COMMANDS, *chaos.COMMANDS, profile_command, bench]:
    main.add_command(command)
