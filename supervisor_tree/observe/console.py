"""`supervise console` / `make console`: a Python REPL attached to a running tree.

Owns the console's names and the text tree it prints.  IPython when it is installed
and the console is a terminal; the standard library's `code` otherwise (also when
stdin is a pipe, so a script can drive it).

    >>> tree()                         # the supervision tree: states, generations, pids, RSS
    >>> info("queue")                  # a worker's figures: CPU, RSS, mailbox, rates, heartbeat stats
    >>> call("queue", {"op": "depth"}) # 0
    >>> cast("queue", {"op": "put", "item": 1})
    >>> kill("queue")                  # SIGKILL; its supervisor restarts it
    >>> profile("queue", duration=3)   # a flame graph of the worker; returns the file's path
    >>> top(5)                         # the five busiest workers

`client` is the `Client` itself (its whole API: which_children, start_child, ...).
"""

from __future__ import annotations

import code
import sys
from collections.abc import Callable, Mapping
from typing import Any

from supervisor_tree.client import Client
from supervisor_tree.observe.snapshot import Sampler, Snapshot, walk

__all__ = ["namespace", "render_tree", "interact", "BANNER"]

BANNER = """supervise console: attached to the node in {run_dir} (pid {pid}, tree {name!r})
  tree()  info(id)  call(id, msg)  cast(id, msg)  kill(id)  profile(id, duration=5)  top(n=10)  client
Ctrl-D leaves (the tree keeps running)."""


def _mib(n: object) -> str:
    return f"{n / 2**20:.1f} MiB" if isinstance(n, int) else "-"


def render_tree(snap: Snapshot) -> str:
    """The tree as text: supervisors with strategy and headroom, workers with state, generation, pid, RSS."""
    tree = snap.tree
    if tree is None:
        return "no tree (the root supervisor has exited)"
    rows = {w.id: w for w in snap.workers}
    heads = {s.path: s for s in snap.supervisors}
    lines = [f"root  {tree['strategy']}  headroom {heads['root'].headroom}/{tree['intensity']} in {tree['period']}s"]

    def draw(sup: Mapping[str, Any], prefix: str) -> None:
        children = list(sup.get("children", ()))
        for i, child in enumerate(children):
            last = i == len(children) - 1
            branch, more = ("└── ", "    ") if last else ("├── ", "│   ")
            nested = child.get("supervisor")
            if nested:
                h = heads.get(nested["path"])
                lines.append(f"{prefix}{branch}{child['id']}  {nested['strategy']}  headroom "
                             f"{h.headroom if h else '?'}/{nested['intensity']} in {nested['period']}s")
                draw(nested, prefix + more)
                continue
            w = rows.get(str(child["id"]))
            pid = f"pid {child['pid']}" if child.get("pid") else "no pid"
            rss = _mib(w.rss) if w else "-"
            lines.append(f"{prefix}{branch}{child['id']}  {child['state']}  gen {child.get('generation') or '-'}  {pid}  {rss}")

    draw(tree, "")
    return "\n".join(lines)


def namespace(client: Client) -> dict[str, object]:
    """The console's names, bound to `client`."""
    sampler = Sampler(client)

    def tree() -> None:
        """Print the supervision tree."""
        print(render_tree(sampler.sample()))

    def info(worker_id: str) -> dict[str, object]:
        """A worker's figures (CPU % needs a previous sample: call it twice, or see top())."""
        row = sampler.sample().worker(worker_id)
        if row is None:
            known = ", ".join(sorted(w.id for w in sampler.sample().workers))
            raise KeyError(f"no worker {worker_id!r} in this tree; workers: {known}")
        return row.as_json()

    def top(n: int = 10, sort: str = "cpu") -> None:
        """Print the n busiest workers (CPU over one second)."""
        import time

        from rich.console import Console

        from supervisor_tree.observe.top import table

        sampler.sample()
        time.sleep(1.0)  # CPU % and rates are over this second
        Console().print(table(sampler.sample(), sort, n))

    def profile(worker_id: str, duration: float = 5.0, **kwargs: Any) -> str:
        """Profile a worker (py-spy by default); returns the flame graph's path."""
        return str(client.profile(worker_id, duration=duration, **kwargs).path)

    names: dict[str, object] = {
        "client": client, "tree": tree, "info": info, "top": top, "profile": profile,
        "call": client.call, "cast": client.cast, "kill": client.kill, "walk": walk,
    }
    return names


def interact(client: Client, plain: bool = False, reader: Callable[[str], str] | None = None) -> None:
    """Run the REPL until EOF.  IPython only on a terminal and when installed (and not `plain`)."""
    node = client.control("ping")
    banner = BANNER.format(run_dir=client.run_dir, pid=node.get("pid"), name=node.get("name"))
    ns = namespace(client)
    if not plain and sys.stdin.isatty():
        try:
            import IPython  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            pass
        else:
            print(banner)
            IPython.start_ipython(argv=["--no-banner"], user_ns=ns)
            return
    code.interact(banner=banner, local=ns, exitmsg="", readfunc=reader)
