"""Benchmarks: the harness (`harness`), the histogram (`hist`), the raw pyzmq references (`raw`).

Run them with ``python -m supervisor_tree.bench [names...] [--quick]``; see
`harness` for writing a workload.  Importing the package registers the built-in
workloads (`workloads`); the harness itself imports none.  Benchmarks are not tests: they run on demand.
"""

from supervisor_tree.bench import workloads  # noqa: F401 - importing it registers the built-in workloads
from supervisor_tree.bench.harness import (
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
from supervisor_tree.bench.hist import Histogram

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
