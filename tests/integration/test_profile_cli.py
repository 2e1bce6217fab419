"""`supervise profile` end to end: a real node, real workers, a client keeping them busy.

The worker under test (`shopapp.Shop`, written beside the config) spends ~80% of each
call in `hot_path` and ~20% in `cool_path`; a call can swap the weights, which is the
"after" of the diff test.  Both engines, every form of the command (one worker,
--all, diff, pstats/callgrind), the Python API, the [profile.trigger] watcher, and a
worker killed mid-capture.  Waits are on conditions; captures are 1-2 s.
"""

from __future__ import annotations

import json
import os
import pstats
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from nodes import REPO, SUPERVISE, Tree, wait_for, write_config

from supervisor_tree.client import Client, ClientError
from supervisor_tree.profiling import Profile, load

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

SHOP_APP = '''
from supervisor_tree import Worker

N = 20_000


def hot_path(n):
    x = 0
    for i in range(n):
        x += i
    return x


def cool_path(n):
    x = 0
    for i in range(n):
        x += i
    return x


def slow_path(n):
    x = 0
    for i in range(n):
        x += i
    return x


class Shop(Worker):
    def init(self):
        self.hot, self.cool = 4, 1  # units of N iterations: ~80% hot_path, ~20% cool_path

    def handle_call(self, msg):
        if isinstance(msg, dict) and "weights" in msg:
            self.hot, self.cool = msg["weights"]
            return "ok"
        return hot_path(self.hot * N) + cool_path(self.cool * N)


class Slow(Worker):
    def handle_call(self, msg):
        return slow_path(40 * N)  # tens of milliseconds of CPU per call
'''

CONFIG = """
[tree]
strategy = "one_for_one"
intensity = 10
period = 10

[[tree.children]]
id = "shop"
start = "shopapp:Shop"

[[tree.children]]
id = "puppet"
start = "supervisor_tree.workers.puppet:Puppet"

[profile]
dir = "profiles"
"""

TRIGGER_CONFIG = """
[tree]
strategy = "one_for_one"

[[tree.children]]
id = "slow"
start = "shopapp:Slow"

[profile]
dir = "profiles"

[profile.trigger]
call_p99_ms = 10
cooldown = 300
duration = {duration}
engine = "py-spy"
"""


class Load:
    """A thread calling one worker back to back with its own Client until stopped."""

    def __init__(self, run_dir: Path, worker: str, msg: object = 1) -> None:
        self.run_dir, self.worker, self.msg = run_dir, worker, msg
        self.calls = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"load-{worker}", daemon=True)

    def _run(self) -> None:
        with Client(self.run_dir, timeout=10.0) as client:
            while not self.stop.is_set():
                try:
                    client.call(self.worker, self.msg, timeout=10.0)
                    self.calls += 1
                except ClientError:
                    continue  # the worker was killed on purpose: the next call finds its successor

    def __enter__(self) -> Load:
        self.thread.start()
        wait_for(lambda: self.calls >= 5, 20, f"calls to {self.worker} to flow")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("shop")
    (directory / "shopapp.py").write_text(SHOP_APP)
    return directory


@pytest.fixture(scope="module")
def tree(shop_dir: Path) -> Iterator[Tree]:
    t = Tree(write_config(shop_dir, CONFIG))
    try:
        started = t.start()
        assert started.returncode == 0, started.stderr
        yield t
    finally:
        t.stop()


@pytest.fixture
def busy(tree: Tree) -> Iterator[Load]:
    with Load(tree.run_dir, "shop") as busy:
        yield busy


def profile_json(tree: Tree, *args: str) -> dict[str, Any]:
    done = tree.cli("profile", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def under(profile: Profile, parent: str) -> dict[str, float]:
    """Weight of each frame directly below the first frame containing `parent`, by function name."""
    widths: dict[str, float] = {}
    for stack, weight in profile.stacks.items():
        frames = stack.split(";")
        at = next((i for i, frame in enumerate(frames) if parent in frame), None)
        if at is not None and at + 1 < len(frames):
            name = frames[at + 1].split(" (")[0]
            widths[name] = widths.get(name, 0.0) + weight
    return widths


def hot_share(profile: Profile) -> float:
    handler = sum(w for s, w in profile.stacks.items() if "handle_call" in s)
    return under(profile, "handle_call").get("hot_path", 0.0) / handler


def pyspy_on(pid: int) -> list[psutil.Process]:
    """Live py-spy processes attached to `pid` (anyone's: other py-spys on the box are ignored)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["name"] == "py-spy" and proc.info["status"] != psutil.STATUS_ZOMBIE \
                    and "--pid" in cmd and cmd[cmd.index("--pid") + 1] == str(pid):
                found.append(proc)
        except (psutil.Error, IndexError):
            pass
    return found


# ---------------------------------------------------------------------- one worker


@pytest.mark.parametrize("engine", ["py-spy", "yappi"])
def test_the_hot_function_is_the_widest_frame_under_the_handler(tree: Tree, busy: Load, shop_dir: Path,
                                                                  engine: str) -> None:
    generation = tree.client.resolve("shop").generation
    done = tree.cli("profile", "shop", "--engine", engine, "--duration", "2", "--top", "5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    path = lines[0]
    assert path.startswith(str(shop_dir / "profiles" / f"shop-{engine}-")) and path.endswith(".svg")
    assert lines[1].startswith(f"{engine} · worker shop · pid ")
    assert "self %" in lines[2] and any("hot_path" in line for line in lines[3:])
    profile = load(path)
    widths = under(profile, "handle_call")
    share = hot_share(profile)
    print(f"{engine}: hot_path {share:.1%} of the handler; below it: {widths}")
    assert max(widths, key=widths.__getitem__) == "hot_path"
    assert 0.55 <= share <= 0.95
    assert profile.meta.worker_id == "shop" and profile.meta.generation == generation
    assert tree.client.resolve("shop").generation == generation  # no restart
    assert tree.client.call("shop", 1) > 0  # still serving


def test_py_spy_sees_a_worker_spinning_in_a_tight_loop(tree: Tree) -> None:
    tree.client.cast("puppet", {"cmd": "spin", "seconds": 4})  # deaf to calls and control ops meanwhile
    out = profile_json(tree, "puppet", "--duration", "1", "--top", "3")
    assert Path(out["path"]).is_file()
    assert "hot_spin" in out["top"][0]["frame"] and out["top"][0]["self_pct"] > 50, out["top"]
    assert out["meta"]["samples"] > 50


def test_all_writes_one_graph_per_worker_and_a_merged_one(tree: Tree, busy: Load, tmp_path: Path) -> None:
    out = profile_json(tree, "--all", "--duration", "1", "--output", str(tmp_path / "all"))
    assert sorted(out["paths"]) == ["puppet", "shop"] and out["errors"] == {}
    for worker, path in out["paths"].items():
        assert Path(path).parent == tmp_path / "all" and Path(path).name.startswith(f"{worker}-py-spy-")
        assert load(path).meta.worker_id == worker
    merged = load(out["merged"])
    assert Path(out["merged"]).name.startswith("all-py-spy-")
    roots = {stack.split(";")[0] for stack in merged.stacks}
    assert roots == {"shop", "puppet"} or roots == {"shop"}, roots  # an idle puppet may give no samples
    assert under(merged, "handle_call").get("hot_path", 0) > 0


def test_yappi_writes_pstats_and_callgrind(tree: Tree, busy: Load, tmp_path: Path) -> None:
    out = profile_json(tree, "shop", "--engine", "yappi", "--format", "pstats", "--duration", "1",
                       "--output", str(tmp_path))
    assert out["path"].endswith(".pstats") and out["meta"]["clock"] == "cpu"
    stats = pstats.Stats(out["path"])
    assert any(func[2] == "hot_path" for func in stats.stats)  # type: ignore[attr-defined]
    out = profile_json(tree, "shop", "--engine", "yappi", "--format", "callgrind", "--duration", "1",
                       "--output", str(tmp_path / "shop.callgrind"))
    text = Path(out["path"]).read_text()
    assert out["path"] == str(tmp_path / "shop.callgrind") and "fn=" in text and "hot_path" in text
    refused = tree.cli("profile", "shop", "--format", "pstats")
    assert refused.returncode == 2 and "need --engine yappi" in refused.stderr


def test_diff_shows_the_frame_that_got_hotter(tree: Tree, busy: Load, tmp_path: Path) -> None:
    # --gil: only the thread running Python, so that shares of the whole are shares of the
    # handler's work, whatever the machine's load does to the waiting threads.
    capture = ("shop", "--duration", "2", "--gil", "--output", str(tmp_path))  # 2 s: enough samples on a loaded machine
    before = profile_json(tree, *capture)["path"]
    assert tree.client.call("shop", {"weights": [1, 4]}) == "ok"  # now cool_path does 80% of the work
    try:
        after = profile_json(tree, *capture)["path"]
    finally:
        tree.client.call("shop", {"weights": [4, 1]})
    out = profile_json(tree, "diff", before, after, "--output", str(tmp_path / "diff.svg"), "--top", "100")
    assert out["path"] == str(tmp_path / "diff.svg")
    changes = {c["frame"].split(" (")[0]: c for c in out["changes"]}
    assert changes["cool_path"]["after_pct"] > changes["cool_path"]["before_pct"] + 20
    assert changes["hot_path"]["after_pct"] < changes["hot_path"]["before_pct"] - 20
    ns = {"s": "http://www.w3.org/2000/svg"}
    fills: dict[str, set[str]] = {}
    for g in ET.parse(out["path"]).getroot().iterfind(".//s:g[@class='f']", ns):
        name = (g.findtext("s:title", "", ns) or "").split(" (")[0]
        rect = g.find("s:rect", ns)
        assert rect is not None
        fills.setdefault(name, set()).add(rect.get("fill", ""))
    red = {f for f in fills["cool_path"] if f.startswith("rgb(255,") and f != "rgb(255,255,255)"}
    assert red == fills["cool_path"], fills["cool_path"]  # hotter: red
    assert all(f.endswith(",255)") and not f.startswith("rgb(255,") for f in fills["hot_path"])  # cooler: blue


# ---------------------------------------------------------------------- Python API


def test_client_profile_returns_the_path_and_the_stacks(tree: Tree, busy: Load, tmp_path: Path) -> None:
    with Client(tree.run_dir) as node:
        result = node.profile("shop", duration=1, profiles_dir=str(tmp_path))
    path, profile = result
    assert Path(path).parent == tmp_path and path.endswith(".svg") and Path(path).is_file()
    assert result.stacks is profile.stacks and any("hot_path" in s for s in result.stacks)
    assert load(path).stacks == pytest.approx(profile.stacks)


# ---------------------------------------------------------------------- dying mid-capture


def test_a_worker_killed_during_a_py_spy_capture(tree: Tree, busy: Load, tmp_path: Path) -> None:
    target = tree.client.resolve("shop")
    pid, generation = target.pid, target.generation
    cmd = [*SUPERVISE, "profile", "shop", "--duration", "20", "--output", str(tmp_path), "--run-dir", str(tree.run_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as cli:
        try:
            wait_for(lambda: pyspy_on(pid), 20, "py-spy to attach to the worker")
            calls = busy.calls
            wait_for(lambda: busy.calls >= calls + 100, 20, "the worker to serve 100 calls under py-spy")
            tree.client.kill("shop")
            out, err = cli.communicate(timeout=30)
        finally:
            if cli.poll() is None:
                cli.kill()
    assert cli.returncode == 1, (out, err)
    err = err.strip().splitlines()[-1]  # after the "profiling worker shop ..." progress line
    assert err.startswith(f'supervise: worker "shop" (generation {generation}): pid {pid} exited '), err
    assert "kept the" in err and "partial profile written to " in err
    partial = err.rsplit("partial profile written to ", 1)[1].strip()
    assert partial.startswith(str(tmp_path / "shop-py-spy-")) and partial.endswith(".partial.svg")
    assert "hot_path" in "".join(load(partial).stacks)
    assert pyspy_on(pid) == []  # the profiler never lingers
    tree.wait_started("shop", generation + 1)


# ---------------------------------------------------------------------- triggers


@pytest.fixture
def trigger_tree(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tree]:
    (tmp_path / "shopapp.py").write_text(SHOP_APP)
    t = Tree(write_config(tmp_path, TRIGGER_CONFIG.format(duration=request.param)))
    try:
        started = t.start()
        assert started.returncode == 0, started.stderr
        yield t
    finally:
        t.stop()


def named(tree: Tree, event: str) -> list[dict[str, Any]]:
    return [e for e in tree.events() if e["event"] == event]


@pytest.mark.parametrize("trigger_tree", [1], indirect=True)
def test_a_slow_handler_triggers_one_capture_per_cooldown(trigger_tree: Tree, tmp_path: Path) -> None:
    tree = trigger_tree
    with Load(tree.run_dir, "slow"):
        captured = tree.wait_event(lambda e: e["event"] in ("profile_captured", "profile_failed"), 30,
                                   "the trigger's capture")
        assert captured["event"] == "profile_captured", captured
        (triggered,) = named(tree, "profile_triggered")
        assert triggered["child"] == "slow" and triggered["seq"] < captured["seq"]
        assert triggered["reason"].startswith("call p99 ") and "(threshold call_p99_ms)" in triggered["reason"]
        assert triggered["detail"]["threshold"] == "call_p99_ms" and triggered["detail"]["value"] >= 10
        path = Path(captured["detail"]["path"])
        assert path.parent == tmp_path / "profiles" and path.name.startswith("slow-py-spy-") and path.is_file()
        assert captured["detail"]["samples"] > 0 and "slow_path" in "".join(load(str(path)).stacks)

        def uptime() -> float:
            (child,) = tree.client.status()["tree"]["children"]
            return float(child.get("stats", {}).get("uptime_s", 0.0))

        then = uptime()
        wait_for(lambda: uptime() >= then + 2.0, 20, "four more heartbeats over the threshold")
    assert len(named(tree, "profile_triggered")) == 1  # the cool-down holds
    shown = tree.cli("events")
    assert "profile_triggered: call p99" in shown.stdout and "profile_captured path=" in shown.stdout


@pytest.mark.parametrize("trigger_tree", [60], indirect=True)
def test_node_stop_cancels_a_running_trigger_capture(trigger_tree: Tree) -> None:
    tree = trigger_tree
    pid = tree.client.resolve("slow").pid
    with Load(tree.run_dir, "slow"):
        tree.wait_event(lambda e: e["event"] == "profile_triggered", 30, "the trigger")
        wait_for(lambda: pyspy_on(pid), 20, "the trigger's py-spy to attach")
        done = tree.cli("stop")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: not tree.running(), 20, "the node to stop")
    assert pyspy_on(pid) == []
