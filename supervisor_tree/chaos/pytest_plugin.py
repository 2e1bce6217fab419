"""A pytest plugin: run a chaos experiment against your own tree in your test suite, with the same gates.

Installed with the package (entry point `pytest11`), so the fixture is there in any
suite that has supervisor_tree installed:

    def test_my_tree_heals(chaos_experiment):
        report = chaos_experiment("config.toml", duration=5, rate=2, faults="kill,exception",
                                  max_lost=0, min_success=99.0)
        assert report.passed, report.summary()

`chaos_experiment(config=None, run_dir=None, **options)` takes `supervise chaos`'s
options as keywords (duration, rate, targets, faults, seed, load, load_rate,
load_threads, max_down, allow_tree_death, max_lost, max_recovery_ms, min_success).
It starts the tree when none runs at `run_dir` (and stops it afterwards), writes the
decision log and the JSON report under the test's tmp_path, and returns the
`ChaosReport`.  `--chaos-seed N` on pytest's command line fixes the seed of every
experiment that does not give one (the seed is printed either way).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from supervisor_tree.chaos.report import ChaosReport, Gates
from supervisor_tree.chaos.run import ChaosOptions, run_chaos

__all__ = ["chaos_experiment", "pytest_addoption"]

Experiment = Callable[..., ChaosReport]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-seed", type=int, default=None, help="supervisor_tree chaos: the seed of every experiment")


@pytest.fixture
def chaos_experiment(request: pytest.FixtureRequest, tmp_path: Path) -> Experiment:
    """`chaos_experiment(config, run_dir, **options) -> ChaosReport`: a `supervise chaos` run (see the module)."""
    count = [0]

    def experiment(config: str | Path | None = None, run_dir: str | Path | None = None, *,
                   max_lost: int | None = None, max_recovery_ms: float | None = None,
                   min_success: float | None = None, **options: object) -> ChaosReport:
        count[0] += 1
        seed = options.pop("seed", None)
        if seed is None:
            seed = request.config.getoption("--chaos-seed")
        log = tmp_path / f"chaos-{count[0]}.jsonl"
        chosen = ChaosOptions(config=str(config) if config else None, run_dir=str(run_dir) if run_dir else None,
                              seed=seed, log=log, progress=False,  # type: ignore[arg-type]
                              gates=Gates(max_lost, max_recovery_ms, min_success), **options)  # type: ignore[arg-type]
        console = Console(file=open(tmp_path / f"chaos-{count[0]}.txt", "w"), width=132)
        try:
            report = run_chaos(chosen, console)
            report.render(console)
        finally:
            console.file.close()
        (tmp_path / f"chaos-{count[0]}.json").write_text(json.dumps(report.to_json(), indent=2, default=str))
        print(f"chaos experiment {count[0]}: seed {report.seed}, report {tmp_path / f'chaos-{count[0]}.txt'}")
        return report

    return experiment
