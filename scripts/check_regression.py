#!/usr/bin/env python3
"""Compare two benchmark result files; fail on a regression beyond noise.

    python scripts/check_regression.py BASELINE.json CURRENT.json [--threshold 0.10]

Exit codes: 0 no regression; 2 regression (or a workload failed in CURRENT);
1 bad input (a missing file, or a file that is not a supervisor_tree bench
result: one line on stderr says which and why).

What is compared, metric by metric (same workload, same measurement name):

* a throughput (``better: higher``): the value must not drop;
* a latency p99 (any measurement with ``latency_us``): it must not rise;
* a lower-is-better value without percentiles (a duration): it must not rise.

A figure fails when it moves the wrong way by more than
``threshold + noise``, where noise is the larger relative spread across
repeats ((max - min) / median) of the two runs.

Which figure decides: the ratio to the reference (ours / raw pyzmq measured in
the same run) when both runs have a reference for it, because the ratio
cancels what the machine did during each run; otherwise the absolute figure.
The noise of a ratio is the largest spread among ours and the reference in
both runs.  Both are always printed.  The references themselves (``"role":
"reference"``, the ``raw`` workload) are printed as "machine": they show how
much the machine moved between the runs and never fail.  Metrics present in only one run are
listed and do not fail; a workload that failed in CURRENT does.

Standard library only (rich is used for the table when installed), so it runs
in CI without the package installed.  The file format is
``supervisor_tree/bench/result.py``'s (``"schema": "supervisor_tree.bench/1"``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

SCHEMA = "supervisor_tree.bench/1"
EXIT_OK, EXIT_BAD_INPUT, EXIT_REGRESSION = 0, 1, 2


class BadInput(Exception):
    pass


@dataclass(frozen=True)
class Figure:
    """One comparable figure of one measurement in one run."""

    value: float
    spread_pct: float
    ref_value: float | None
    ref_spread_pct: float | None

    @property
    def ratio(self) -> float | None:
        if self.ref_value is None or self.ref_value == 0:
            return None
        return self.value / self.ref_value


@dataclass(frozen=True)
class Check:
    workload: str
    metric: str
    figure: str  # "throughput", "p99", "value"
    unit: str
    higher_is_better: bool
    base: Figure
    cur: Figure
    threshold: float
    role: str = "ours"  # "reference": a figure of the machine, shown and never failed on

    @property
    def decided_by(self) -> str:
        return "ratio" if self.base.ratio is not None and self.cur.ratio is not None else "absolute"

    def _worse_by(self, base: float, cur: float) -> float:
        """How much worse `cur` is than `base`, as a fraction of base (negative: better)."""
        if base == 0:
            return 0.0
        change = (cur - base) / abs(base)
        return -change if self.higher_is_better else change

    @property
    def noise(self) -> float:
        spreads = [self.base.spread_pct, self.cur.spread_pct]
        if self.decided_by == "ratio":
            spreads += [self.base.ref_spread_pct or 0.0, self.cur.ref_spread_pct or 0.0]
        return max(spreads) / 100.0

    @property
    def tolerance(self) -> float:
        return self.threshold + self.noise

    @property
    def worse_by(self) -> float:
        if self.decided_by == "ratio":
            return self._worse_by(self.base.ratio, self.cur.ratio)  # type: ignore[arg-type]
        return self._worse_by(self.base.value, self.cur.value)

    @property
    def verdict(self) -> str:
        if self.role == "reference":
            return "machine"
        if self.worse_by > self.tolerance:
            return "REGRESSION"
        if self.worse_by < -self.tolerance:
            return "better"
        return "ok"


# -- reading -------------------------------------------------------------------------
def _num(x: object, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise BadInput(f"{where} must be a number; got {x!r}")
    return float(x)


def _opt_num(x: object, where: str) -> float | None:
    return None if x is None else _num(x, where)


def load(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, not a result file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BadInput(f'{path}: not a supervisor_tree bench result (no "schema": "{SCHEMA}")')
    if not isinstance(data.get("workloads"), dict):
        raise BadInput(f'{path}: "workloads" must be an object')
    for name, wl in data["workloads"].items():
        if not isinstance(wl, dict) or not isinstance(wl.get("measurements"), list):
            raise BadInput(f'{path}: workload "{name}": "measurements" must be a list')
    return data


Entry = tuple[Figure, str, bool, str]  # figure, unit, higher_is_better, role


def figures(m: dict[str, Any], where: str) -> dict[str, Entry]:
    """The comparable figures of one measurement: name -> (figure, unit, higher_is_better, role)."""
    if not isinstance(m, dict) or not isinstance(m.get("name"), str):
        raise BadInput(f"{where}: a measurement without a name")
    where = f'{where} "{m["name"]}"'
    better = m.get("better", "higher")
    if better not in ("higher", "lower"):
        raise BadInput(f'{where}: "better" must be "higher" or "lower"; got {better!r}')
    ref = m.get("reference") if isinstance(m.get("reference"), dict) else None
    lat = m.get("latency_us") if isinstance(m.get("latency_us"), dict) else None
    unit = str(m.get("unit", ""))
    role = m.get("role", "ours")
    if role not in ("ours", "reference"):
        raise BadInput(f'{where}: "role" must be "ours" or "reference"; got {role!r}')
    out: dict[str, Entry] = {}
    if better == "higher" or lat is None:
        fig = Figure(
            value=_num(m.get("value"), f"{where} value"),
            spread_pct=_num(m.get("spread_pct", 0.0), f"{where} spread_pct"),
            ref_value=None if ref is None else _opt_num(ref.get("value"), f"{where} reference.value"),
            ref_spread_pct=None if ref is None else _opt_num(ref.get("spread_pct"), f"{where} reference.spread_pct"),
        )
        out["throughput" if better == "higher" else "value"] = (fig, unit, better == "higher", role)
    if lat is not None:
        fig = Figure(
            value=_num(lat.get("p99"), f"{where} latency_us.p99"),
            spread_pct=_num(lat.get("p99_spread_pct", 0.0), f"{where} latency_us.p99_spread_pct"),
            ref_value=None if ref is None else _opt_num(ref.get("p99_us"), f"{where} reference.p99_us"),
            ref_spread_pct=None
            if ref is None
            else _opt_num(ref.get("p99_spread_pct"), f"{where} reference.p99_spread_pct"),
        )
        out["p99"] = (fig, "µs", False, role)
    return out


def index(data: dict[str, Any], path: str) -> dict[tuple[str, str, str], Entry]:
    out = {}
    for wname, wl in data["workloads"].items():
        for m in wl["measurements"]:
            for fname, entry in figures(m, f'{path}: workload "{wname}"').items():
                out[(wname, m["name"], fname)] = entry
    return out


# -- comparing and printing ------------------------------------------------------------
def compare(
    base: dict[str, Any], cur: dict[str, Any], threshold: float, paths: Sequence[str]
) -> tuple[list[Check], list[str]]:
    """The checks for every figure in both runs, and notes (missing, new, failed)."""
    bi, ci = index(base, paths[0]), index(cur, paths[1])
    checks = []
    for key, (bfig, unit, higher, role) in bi.items():
        if key in ci:
            checks.append(Check(*key, unit, higher, bfig, ci[key][0], threshold, role))
    notes = [f"not in current run: {w} / {m} ({f})" for (w, m, f) in bi if (w, m, f) not in ci]
    notes += [f"new in current run: {w} / {m} ({f})" for (w, m, f) in ci if (w, m, f) not in bi]
    return checks, notes


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit == "µs" and x >= 1000:
        return f"{x / 1000:.4g} ms"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale and unit != "µs":
            return f"{x / scale:.3g}{suffix} {unit}".strip()
    return f"{x:.4g} {unit}".strip()


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def rows(checks: list[Check]) -> list[list[str]]:
    out = []
    for c in checks:
        abs_change = (c.cur.value - c.base.value) / c.base.value if c.base.value else 0.0
        ratio = "-"
        if c.base.ratio is not None and c.cur.ratio is not None:
            ratio = f"{c.base.ratio:.3f} -> {c.cur.ratio:.3f}"
        out.append(
            [
                c.workload,
                c.metric,
                c.figure,
                _fmt(c.base.value, c.unit),
                _fmt(c.cur.value, c.unit),
                _pct(abs_change),
                ratio,
                f"{c.tolerance * 100:.1f}%",
                c.decided_by,
                f"worse by {_pct(c.worse_by)}" if c.verdict == "REGRESSION" else c.verdict,
            ]
        )
    return out


HEADERS = [
    "workload",
    "metric",
    "figure",
    "baseline",
    "current",
    "change",
    "ratio to ref",
    "tolerance",
    "decides",
    "verdict",
]


def print_table(table_rows: list[list[str]], title: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [HEADERS, *table_rows]) for i in range(len(HEADERS))]
        print(title)
        for r in [HEADERS, *table_rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
        return
    table = Table(title=title)
    for h in HEADERS:
        table.add_column(h, no_wrap=True)
    style = {"REGRESSION": "bold red", "better": "green", "ok": "", "machine": "dim"}
    for r in table_rows:
        verdict = r[-1].split(" ")[0] if r[-1].startswith("worse") else r[-1]
        s = style.get("REGRESSION" if verdict == "worse" else verdict, "")
        table.add_row(*r[:-1], f"[{s}]{r[-1]}[/]" if s else r[-1])
    console = Console()
    if not console.is_terminal:  # a CI log: wide enough that rows stay whole
        console = Console(width=max(console.width, 180))
    console.print(table)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # usage errors are bad input: exit 1, one line
        self.exit(EXIT_BAD_INPUT, f"check_regression: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = _Parser(description=__doc__.split("\n\n")[0], prog="check_regression.py")
    p.add_argument("baseline")
    p.add_argument("current")
    p.add_argument("--threshold", type=float, default=0.10, help="allowed slowdown beyond noise (0.10 = 10%%)")
    args = p.parse_args(argv)
    if not 0.0 <= args.threshold < 10.0:
        p.error(f"--threshold must be a fraction within [0, 10), e.g. 0.10; got {args.threshold}")
    try:
        base, cur = load(args.baseline), load(args.current)
        checks, notes = compare(base, cur, args.threshold, (args.baseline, args.current))
    except BadInput as e:
        print(f"check_regression: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    failed = [f"{name}: {wl.get('error')}" for name, wl in cur["workloads"].items() if wl.get("error")]
    title = (
        f"baseline {str(base.get('commit') or 'no git')[:10]} ({base.get('started_at', '?')}) -> "
        f"current {str(cur.get('commit') or 'no git')[:10]} ({cur.get('started_at', '?')}), "
        f"threshold {args.threshold * 100:.0f}% + noise"
    )
    print_table(rows(checks), title)
    if base.get("quick") != cur.get("quick"):
        notes.append("one run is --quick and the other is not: counts differ, compare with care")
    for note in notes:
        print(f"note: {note}")
    for f in failed:
        print(f"FAILED in current run: workload {f}")
    regressions = [c for c in checks if c.verdict == "REGRESSION"]
    if regressions or failed:
        print(f"{len(regressions)} regression(s), {len(failed)} failed workload(s) in {len(checks)} figures compared")
        return EXIT_REGRESSION
    print(f"no regression in {len(checks)} figures compared")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
