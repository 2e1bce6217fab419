"""Progress for benchmark runs: a rich bar on a terminal, plain lines elsewhere.

Owns what a person watching a run sees while it runs (on stderr, so stdout
stays the table).  It does not time anything the results depend on.

    >>> with BenchProgress(enabled=False) as progress:
    ...     with progress.task("push_pull 64 B", total=6) as advance:
    ...         for _ in range(6):
    ...             advance()

Why no refresh thread (``auto_refresh=False``): benchmarks fork.  A thread that
holds the console or stdout lock at the moment of a fork leaves that lock held
forever in the child; redrawing on each step instead keeps the process
single-threaded.  Steps are repeats, each well under a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["BenchProgress"]


class BenchProgress:
    """Steps of named tasks; a live bar on a TTY, a line per finished task otherwise."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console if console is not None else Console(stderr=True)
        self.enabled = enabled
        self._bar: Progress | None = None
        self._depth = 0

    def __enter__(self) -> BenchProgress:
        self._depth += 1
        if self._depth == 1 and self.enabled and self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                auto_refresh=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth == 0 and self._bar is not None:
            self._bar.stop()
            self._bar = None

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        """Yield an ``advance()`` to call once per step of `total`."""
        done = 0
        started = time.monotonic()
        bar = self._bar
        task_id = bar.add_task(description, total=total) if bar is not None else None
        if bar is not None:
            bar.refresh()

        def advance() -> None:
            nonlocal done
            done += 1
            if bar is not None and task_id is not None:
                bar.update(task_id, advance=1)
                bar.refresh()

        try:
            yield advance
        finally:
            if bar is None and self.enabled:
                elapsed = time.monotonic() - started
                self.console.print(f"  {description}: {done}/{total} in {elapsed:.1f} s", highlight=False)

    def note(self, text: str) -> None:
        """A line above the bars (or on its own without a terminal)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, highlight=False)
            self._bar.refresh()
        else:
            self.console.print(text, highlight=False)
