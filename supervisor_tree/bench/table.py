"""The table people read after a run (rich), and the number formatting it uses.

Owns presentation only: the figures come from a ``Result`` untouched.

    workload | metric | ours (± spread) | reference | ratio | p50 / p99 | target | status
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from supervisor_tree.bench.measurement import Better, Measurement, Status
from supervisor_tree.bench.result import Result

__all__ = ["build_table", "default_console", "format_us", "format_value", "print_table"]


def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def format_us(us: float) -> str:
    """A duration given in µs, in the unit that keeps 3 significant digits readable."""
    if us >= 1_000_000:
        return f"{us / 1_000_000:.3g} s"
    if us >= 1000:
        return f"{us / 1000:.3g} ms"
    return f"{us:.3g} µs"


def format_value(value: float, unit: str) -> str:
    if unit == "µs":
        return format_us(value)
    if unit in ("ms", "s"):
        return f"{value:.3g} {unit}"
    return f"{_si(value)} {unit}"


def _ours(m: Measurement) -> str:
    return f"{format_value(m.value, m.unit)} ±{m.spread_pct / 2:.0f}%"


def _reference(m: Measurement) -> str:
    if m.reference is None:
        return "-"
    return f"{format_value(m.reference.value, m.unit)} ({m.reference.name})"


def _ratio(m: Measurement) -> str:
    r = m.ratio
    return "-" if r is None else f"{r:.2f}x"


def _latency(m: Measurement) -> str:
    if m.latency is None:
        return "-"
    return f"{format_us(m.latency.p50)} / {format_us(m.latency.p99)}"


def _target(m: Measurement) -> str:
    parts = []
    if m.target is not None:
        op = ">=" if m.better is Better.HIGHER else "<="
        parts.append(f"{op} {format_value(m.target, m.unit)}")
    if m.p99_target_us is not None:
        parts.append(f"p99 <= {format_us(m.p99_target_us)}")
    return ", ".join(parts) or "-"


_STATUS_STYLE = {Status.MEETS: "green", Status.BELOW: "bold red", Status.NO_TARGET: "dim"}


def build_table(result: Result) -> Table:
    mode = "quick" if result.quick else "full"
    commit = (result.commit or "no git")[:10]
    table = Table(
        title=f"supervisor_tree bench ({mode}, {result.repeats} repeats, commit {commit})",
        caption="ours: median of repeats, ± half the min..max spread; ratio: ours / reference",
    )
    for col in ("workload", "metric", "ours", "reference", "ratio", "p50 / p99", "target", "status"):
        table.add_column(col, justify="right" if col in ("ours", "ratio") else "left", no_wrap=col == "metric")
    for name, wl in result.workloads.items():
        if wl.error is not None:
            table.add_row(name, "[bold red]failed[/]", wl.error, "", "", "", "", "[bold red]error[/]")
            continue
        for m in wl.measurements:
            status = m.status
            table.add_row(
                name,
                m.name,
                _ours(m),
                _reference(m),
                _ratio(m),
                _latency(m),
                _target(m),
                f"[{_STATUS_STYLE[status]}]{status.value}[/]",
            )
    return table


def default_console() -> Console:
    """stdout; 160 columns wide when it is not a terminal (a log, a pipe), so rows stay whole."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))


def print_table(result: Result, console: Console | None = None) -> None:
    """Print the run as a rich table (plain text when stdout is not a terminal)."""
    (console or default_console()).print(build_table(result))
