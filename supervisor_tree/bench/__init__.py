"""Benchmarks: the harness (`harness`), the histogram (`hist`), the raw pyzmq references (`raw`).

Run them with ``python -m supervisor_tree.bench [names...] [--quick]``; see
`harness` for writing a workload.  Benchmarks are not tests: they run on demand.
"""

from .harness import (
    BenchContext,
    BenchError,
    BenchProgress,
    Better,
    Measurement,
    Reference,
    Result,
    Trial,
    load_result,
    print_table,
    registry,
    run,
    run_repeats,
    save_json,
    workload,
)
from .hist import Histogram

__all__ = [
    "BenchContext",
    "BenchError",
    "BenchProgress",
    "Better",
    "Histogram",
    "Measurement",
    "Reference",
    "Result",
    "Trial",
    "load_result",
    "print_table",
    "registry",
    "run",
    "run_repeats",
    "save_json",
    "workload",
]
