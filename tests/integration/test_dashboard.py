"""The dashboard end to end: Debian's chromium (headless, driven by playwright) on a real tree.

Also: top, health and the dashboard keep answering while a worker crash-loops.
The browser tests skip, saying why, only where /usr/bin/chromium is missing (`make browser`
installs it; `make test` runs that first).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nodes import REPO, SUPERVISE, Tree, started, wait_for, write_config

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
PUPPET = "supervisor_tree.workers.puppet:Puppet"

TREE = f"""
[tree]
strategy = "one_for_one"
intensity = 20
period = 10

[[tree.children]]
id = "steady"
start = "{PUPPET}"

[[tree.children]]
id = "spinner"
start = "{PUPPET}"
"""

CRASHER = '''
from supervisor_tree import Worker


class Crasher(Worker):
    """Crashes 20 ms after every start: a crash loop its supervisor never gives up on."""

    def init(self):
        self.send_after(0.02, "crash")

    def handle_info(self, msg):
        raise RuntimeError("crash loop on purpose")
'''

CRASH_LOOP = f"""
[tree]
strategy = "one_for_one"
intensity = 100000
period = 1

[[tree.children]]
id = "steady"
start = "{PUPPET}"

[[tree.children]]
id = "crasher"
start = "crasher:Crasher"
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


class Board:
    """`supervise dashboard --port 0` in a subprocess; `url` once it listens."""

    def __init__(self, tree: Tree, profiles: Path) -> None:
        self.proc = subprocess.Popen([*SUPERVISE, "dashboard", "--port", "0", "--interval", "0.5", "--run-dir", str(tree.run_dir),
                                      "--profiles-dir", str(profiles)], stderr=subprocess.PIPE, text=True, env=_env())
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        assert "dashboard on http://127.0.0.1:" in line, line + self.proc.stderr.read()
        self.url = line.split(" on ")[1].split(" ")[0]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=10) as r:
            return json.loads(r.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    t = started(write_config(tmp_path, TREE))
    yield t
    t.stop()


@pytest.fixture
def board(tree: Tree, tmp_path: Path) -> Iterator[Board]:
    b = Board(tree, tmp_path / "profiles")
    yield b
    b.close()


@pytest.fixture
def page(board: Board) -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no browser: {CHROMIUM} is missing (`make browser` installs Debian's chromium, as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            pg.goto(board.url)
            yield pg
            assert errors == [], f"the page raised: {errors}"
        finally:
            browser.close()


def test_page_draws_the_tree_live_with_sparklines(page: Any) -> None:
    page.wait_for_selector('li[data-supervisor="root"] li[data-worker="steady"][data-state="running"][data-generation="1"]')
    page.wait_for_selector('li[data-worker="spinner"] [data-testid="state"]:text("running")')
    assert "one_for_one" in page.inner_text('li[data-supervisor="root"]')
    assert page.inner_text('li[data-supervisor="root"] > [data-testid="headroom"]') == "20"
    # a sparkline gets a line once the page has two samples of a worker
    page.wait_for_selector('tr[data-worker="steady"] svg[data-testid="spark-rss"] polyline')
    page.wait_for_selector('#events div[data-event="started"][data-child="spinner"]')
    assert page.inner_text('[data-testid="conn"]') == "live"


def test_kill_from_the_page_and_see_the_worker_come_back(page: Any, tree: Tree) -> None:
    page.wait_for_selector('li[data-worker="steady"][data-state="running"][data-generation="1"]')
    first = tree.pid_of("steady")
    page.click('tr[data-worker="steady"] button[data-testid="kill"]')
    page.wait_for_selector(f'[data-testid="action"]:text("sent SIGKILL to steady (pid {first}, generation 1)")')
    page.wait_for_selector('li[data-worker="steady"][data-state="running"][data-generation="2"]')
    page.wait_for_selector('#events div[data-event="restarting"][data-child="steady"]')
    assert tree.pid_of("steady") != first
    page.wait_for_selector('tr[data-worker="steady"] [data-testid="restarts"]:text("1")')


def test_profile_from_the_page_shows_the_flame_graph(page: Any, tree: Tree) -> None:
    page.wait_for_selector('li[data-worker="spinner"][data-state="running"]')
    tree.client.cast("spinner", {"cmd": "spin", "seconds": 30})  # busy in hot_spin while py-spy samples
    page.click('tr[data-worker="spinner"] button[data-testid="profile"]')
    page.wait_for_function("document.getElementById('flame').src.includes('/profiles/spinner-py-spy-')", timeout=60_000)
    frame = page.frame_locator('[data-testid="flame"]')
    frame.locator("g.f > title", has_text="hot_spin").first.wait_for(state="attached", timeout=30_000)
    assert "spinner" in page.inner_text('[data-testid="flame-title"]')
    tree.client.kill("spinner")  # stop the spin: the test is over


def test_actions_need_the_pages_header(board: Board) -> None:
    req = urllib.request.Request(board.url + "api/kill/steady", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403
    err.value.close()
    req = urllib.request.Request(board.url + "api/profile/steady?duration=999", method="POST", headers={"X-Supervise": "1"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400 and "duration must be in (0, 60]" in err.value.read().decode()
    err.value.close()


def test_top_health_and_dashboard_answer_during_a_crash_loop(tmp_path: Path) -> None:
    (tmp_path / "crasher.py").write_text(CRASHER)
    t = Tree(write_config(tmp_path, CRASH_LOOP))
    b = None
    try:
        assert t.start().returncode == 0
        wait_for(lambda: sum(1 for e in t.events() if e["event"] == "restarting") >= 10, what="a crash loop")
        b = Board(t, tmp_path / "profiles")
        for _ in range(3):  # repeatedly, while it keeps crashing
            top = t.cli("top", "--once", "--json", "--interval", "0.2")
            assert top.returncode == 0, top.stderr
            crasher = next(w for w in json.loads(top.stdout)["workers"] if w["id"] == "crasher")
            assert crasher["restarts"] >= 10
            health = t.cli("health", "--json", "--window", "0")
            assert health.returncode == 1, health.stdout + health.stderr
            checks = json.loads(health.stdout)["checks"]
            assert ("restarting", "crasher") in {(c["check"], c["subject"]) for c in checks}
            snap = wait_for(lambda: b.get("/api/snapshot")["snapshot"], what="the dashboard's first sample")
            assert {w["id"] for w in snap["workers"]} == {"steady", "crasher"}
        last = b.get("/api/snapshot")
        assert last["error"] is None and any(r["event"] == "restarting" for r in last["reports"])
    finally:
        if b is not None:
            b.close()
        t.stop()
