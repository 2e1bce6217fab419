"""Shared by the workload tests: record every BenchTree a workload starts, check none is left."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from supervisor_tree.bench import _tree


def recorded_trees(monkeypatch: pytest.MonkeyPatch, workload: ModuleType) -> Iterator[list[_tree.BenchTree]]:
    """Every BenchTree `workload` starts; afterwards none may have a process or a directory left."""
    started: list[_tree.BenchTree] = []

    class Recorded(_tree.BenchTree):
        def __init__(self, config: str, base: Path | str | None = None) -> None:
            super().__init__(config, base)
            started.append(self)

    monkeypatch.setattr(workload, "BenchTree", Recorded)
    yield started
    for tree in started:
        assert tree.processes() == [], f"processes of {tree.run_dir} left behind"
        assert not tree.dir.exists(), f"{tree.dir} left behind"
