"""``python -m supervisor_tree.bench [names...] [--quick] [--json-dir DIR] [--repeats N]``

Runs registered workloads (all of them, or the quick ones with ``--quick``),
prints the table on stdout (progress goes to stderr) and writes one JSON file
per run.  ``supervise bench`` calls the same `run`, `print_table` and `save_json`.

Exit codes: 0 every workload produced its figures; 1 a workload failed (the
others still ran and were saved); 2 bad usage (unknown workload, bad option).

    $ python -m supervisor_tree.bench raw --quick
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rich.console import Console

from supervisor_tree.bench.harness import MIN_REPEATS, UnknownWorkload, print_table, registry, run, save_json
from supervisor_tree.bench.table import default_console


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m supervisor_tree.bench",
        description="Run supervisor_tree benchmarks; each figure beside a raw pyzmq reference from the same run.",
    )
    p.add_argument("names", nargs="*", help="workloads to run (default: all; with --quick: the quick ones)")
    p.add_argument("--quick", action="store_true", help="smaller counts (the < 2 min pre-commit run)")
    p.add_argument("--json-dir", default="bench-results", metavar="DIR", help="where the result file goes")
    p.add_argument("--no-json", action="store_true", help="do not write a result file")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS, metavar="N", help=f"repeats (>= {MIN_REPEATS})")
    p.add_argument("--warmup", type=int, default=1, metavar="N", help="warm-up rounds before the repeats")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="seconds per sustained workload")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="ray: `restart` on a Ray cluster beside Ray's own actor restart (needs the ray extra)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="with --backend ray: the cluster (default: a local two-node one, started and stopped here)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    out = default_console()
    err = Console(stderr=True)
    if args.list:
        for wl in registry().values():
            out.print(f"{wl.name:24} {'quick' if wl.quick else 'full '}  {wl.description}", highlight=False)
        return 0
    if args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be >= {MIN_REPEATS} (a median and a spread need them); got {args.repeats}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0; got {args.warmup}")
    if args.backend == "ray":
        return _on_ray(parser, args)
    try:
        result = run(args.names, quick=args.quick, repeats=args.repeats, warmup=args.warmup, duration=args.duration)
    except UnknownWorkload as e:
        err.print(f"bench: {e}", highlight=False)
        return 2
    print_table(result, out)
    if not args.no_json:
        path = save_json(result, args.json_dir)
        err.print(f"results: {path}", highlight=False)
    for name in result.failed:
        err.print(f"bench: workload {name} failed: {result.workloads[name].error}", highlight=False)
    return 1 if result.failed else 0


def _on_ray(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if list(args.names) != ["restart"]:
        parser.error(f"--backend ray measures the workload restart only; got {' '.join(args.names) or 'none'}")
    from supervisor_tree.config.placement import ray_missing

    missing = ray_missing()
    if missing:
        parser.error(missing.replace('backend = "ray"', "--backend ray"))
    if args.address is None:  # our own local cluster: loopback only (read by Ray when it is imported)
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from supervisor_tree.bench.ray_restart import main as ray_main

    return ray_main(rounds=10 if args.quick else 30, address=args.address)


if __name__ == "__main__":
    sys.exit(main())
