"""A worker that starts processes of its own (imported by the node as tests.integration.family_workers)."""

from __future__ import annotations

import subprocess
from typing import cast

from supervisor_tree import Worker


class Parent(Worker):
    """("child", argv): start argv as its child, return its pid; ("orphan", argv): start it through a
    shell that exits at once (the process is then the node's child: the node is a subreaper), its pid."""

    def init(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def handle_call(self, msg: object) -> object:
        kind, argv = cast("tuple[str, list[str]]", msg)
        if kind == "child":
            self.children.append(subprocess.Popen(argv))
            return self.children[-1].pid
        script = " ".join(argv) + " >/dev/null 2>&1 & echo $!"
        return int(subprocess.run(["sh", "-c", script], capture_output=True, check=True, text=True).stdout)
