"""config.py: TOML in, a validated NodeSpec or one ConfigError listing every problem.

Assertions are on the lines a user reads: file, key path, value, what is allowed.
Worker modules are written into tmp_path by the tests that import them; every other
test parses with check_imports=False.
"""

from __future__ import annotations

import math
import pickle
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor_tree.config.describe import describe
from supervisor_tree.config.load import (
    ConfigError,
    load_config,
    node_spec_from_mapping,
    parse_config,
)
from supervisor_tree.spec import (
    INFINITY,
    AutoShutdown,
    Backoff,
    ChildType,
    Heartbeat,
    Restart,
    RetryBudget,
    RetryOn,
    RetryPolicy,
    RetryWait,
    Shutdown,
    Strategy,
)


def problems(text: str, *, check_imports: bool = False, config_dir: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), source="config.toml", config_dir=config_dir, check_imports=check_imports)
    return info.value.problems


def one_child(body: str, *, flags: str = "") -> str:
    """A tree with one child whose keys are `body`."""
    return f"[tree]\n{textwrap.dedent(flags)}\n[[tree.children]]\n{textwrap.dedent(body)}"


@pytest.fixture
def fresh_modules() -> Iterator[None]:
    """Forget modules a test imported from tmp_path, so the next test imports its own."""
    yield
    for name in [n for n in sys.modules if n.startswith("cfgt_")]:
        del sys.modules[name]


# ---------------------------------------------------------------------------
# A good config


GOOD = """
[node]
name = "myapp"
preload = ["json"]
heartbeat = { interval = 0.25, misses = 8 }

[tree]
strategy = "rest_for_one"
intensity = 5
period = 10

[[tree.children]]
id = "counter"
start = "myapp.counter:Counter"
args = { start = 7 }
restart = "transient"
shutdown = "brutal_kill"
start_timeout = 2
backoff = { initial = 0.1, factor = 3, cap = 1.0, jitter = true, reset_after = 60 }
retry = { attempts = 5, wait = "fixed", initial = 0.2, max = 0.2, jitter = false }
heartbeat = { interval = 1, misses = 2 }

[[tree.children]]
id = "mid"
type = "supervisor"
strategy = "one_for_all"
auto_shutdown = "any_significant"

[[tree.children.children]]
id = "w1"
start = "myapp:W"
backoff = true
retry = { attempts = 4, wait = "decorrelated", initial = 0.01, max = 0.5, deadline = 3, per_attempt_timeout = 1, retry_on = ["exited", "busy"] }
retry_budget = { ratio = 0.1, window = 5, min_per_s = 1 }
retry_calls = { counter = { attempts = 2, wait = "random_exponential", multiplier = 3 } }

[[tree.children.children]]
id = "leaf"
type = "supervisor"
restart = "transient"
significant = true

[[tree.children.children.children]]
id = "w2"
start = "myapp:W"

[profile]
dir = "captures"
[profile.trigger]
mailbox_depth = 1000
workers = ["counter", "w2"]
"""


def test_a_good_config_maps_onto_the_specs() -> None:
    spec = parse_config(GOOD, source="config.toml", config_dir="/srv/app", check_imports=False)
    assert (spec.name, spec.preload, spec.heartbeat) == ("myapp", ("json",), Heartbeat(0.25, 8))
    assert (spec.source, spec.config_dir) == ("config.toml", "/srv/app")
    tree = spec.tree
    assert (tree.strategy, tree.intensity, tree.period, tree.auto_shutdown) == (
        Strategy.REST_FOR_ONE, 5, 10, AutoShutdown.NEVER)  # fmt: skip

    counter, mid = tree.children
    assert counter.id == "counter" and counter.start == "myapp.counter:Counter"
    assert counter.args == {"start": 7}
    assert counter.restart is Restart.TRANSIENT and counter.shutdown == Shutdown.parse("brutal_kill")
    assert counter.start_timeout == 2.0 and isinstance(counter.start_timeout, float)
    assert counter.backoff == Backoff(initial=0.1, factor=3.0, cap=1.0, jitter=True, reset_after=60.0)
    assert counter.retry == RetryPolicy(attempts=5, wait="fixed", initial=0.2, max=0.2, jitter=False)
    assert counter.heartbeat == Heartbeat(1.0, 2)

    assert mid.type is ChildType.SUPERVISOR and mid.start is None and mid.supervisor is not None
    assert (mid.supervisor.strategy, mid.supervisor.auto_shutdown) == (Strategy.ONE_FOR_ALL, AutoShutdown.ANY_SIGNIFICANT)
    w1, leaf = mid.supervisor.children
    assert w1.backoff == Backoff()  # `backoff = true`: the defaults
    assert w1.retry == RetryPolicy(attempts=4, wait=RetryWait.DECORRELATED, initial=0.01, max=0.5, deadline=3.0,
                                   per_attempt_timeout=1.0, retry_on=(RetryOn.EXITED, RetryOn.BUSY))
    assert w1.retry_budget == RetryBudget(ratio=0.1, window=5.0, min_per_s=1.0)
    assert w1.retry_calls == {"counter": RetryPolicy(attempts=2, wait=RetryWait.RANDOM_EXPONENTIAL, multiplier=3.0)}
    assert counter.retry_budget is None and counter.retry_calls == {}
    assert leaf.significant and leaf.restart is Restart.TRANSIENT
    assert leaf.supervisor is not None and [c.id for c in leaf.supervisor.children] == ["w2"]

    assert spec.extra["profile"] == {
        "dir": "/srv/app/captures",
        "trigger": {"mailbox_depth": 1000, "call_p99_ms": None, "cooldown": 300.0, "duration": 10.0,
                    "engine": "py-spy", "workers": ["counter", "w2"]},
    }  # fmt: skip


def test_defaults_are_otps_and_are_filled_in() -> None:
    """R14: one_for_one, intensity 1, period 5, never; permanent workers, shutdown 5000 / infinity."""
    spec = parse_config(
        one_child('id = "w"\nstart = "m:W"\n[[tree.children]]\nid = "s"\ntype = "supervisor"'),
        check_imports=False,
    )
    tree = spec.tree
    assert (tree.strategy, tree.intensity, tree.period, tree.auto_shutdown) == (
        Strategy.ONE_FOR_ONE, 1, 5, AutoShutdown.NEVER)  # fmt: skip
    worker, sup = tree.children
    assert (worker.restart, worker.type, worker.significant) == (Restart.PERMANENT, ChildType.WORKER, False)
    assert worker.shutdown == Shutdown.timeout(5000)
    assert (worker.args, worker.start_timeout, worker.backoff, worker.retry, worker.heartbeat) == ({}, 30.0, None, None, None)
    assert sup.shutdown == INFINITY and sup.restart is Restart.PERMANENT
    assert sup.supervisor is not None and sup.supervisor.children == ()  # allowed, as in OTP
    assert (spec.name, spec.preload, spec.heartbeat) == ("supervisor_tree", (), Heartbeat())
    assert spec.extra["profile"] == {"dir": "profiles", "trigger": None}


def test_load_config_anchors_the_file_and_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(one_child('id = "w"\nstart = "m:W"') + '\n[profile]\ndir = "out"\n')
    spec = load_config(path, check_imports=False)
    assert spec.source == str(path) and spec.config_dir == str(tmp_path)
    assert spec.extra["profile"] == {"dir": str(tmp_path / "out"), "trigger": None}


def test_a_missing_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.problems == [f"{tmp_path / 'nope.toml'}: cannot read the config: No such file or directory"]


def test_the_built_in_tree_can_be_a_dict_with_a_class_as_start() -> None:
    class Echo:
        pass

    data = {"tree": {"children": [{"id": "echo", "start": Echo, "args": {"x": 1}}]}}
    spec = node_spec_from_mapping(data, source="<built-in>", config_dir=None, check_imports=True)
    assert spec.tree.children[0].start is Echo


# ---------------------------------------------------------------------------
# Syntax, unknown keys, types, enums


def test_a_syntax_error_names_line_and_column() -> None:
    text = '[tree]\n[[tree.children]]\nid = "a"\nstart = "x:y" junk\n'
    assert problems(text) == ["config.toml: line 4, column 15: Expected newline or end of document after a statement"]


def test_an_unknown_key_suggests_the_close_one_and_lists_the_allowed() -> None:
    assert problems(one_child('id = "counter"\nstart = "m:C"\nrestrat = "permanent"')) == [
        'config.toml: tree.children[0] "counter": unknown key "restrat" (did you mean "restart"?); allowed: '
        "id, start, args, restart, shutdown, type, significant, start_timeout, backoff, retry, retry_budget, "
        "retry_calls, heartbeat, max_concurrency, mailbox_limit, mailbox_overflow, oom_score_adj, resources, "
        "node_affinity, command, env, cwd, "
        "stop_signal, ready"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[tre]\n", 'config.toml: unknown key "tre" (did you mean "tree"?); allowed: node, tree, profile'),
        ("[tree]\nstrategi = 'one_for_one'", 'config.toml: tree: unknown key "strategi" (did you mean "strategy"?)'),
        ("[node]\nzzz = 1\n[tree]", 'config.toml: node: unknown key "zzz"; allowed: name, preload, heartbeat'),
        (one_child('id = "c"\nstart = "m:C"\nbackoff = { inital = 1 }'),
         'config.toml: tree.children[0] "c": unknown key "backoff.inital" (did you mean "backoff.initial"?); '
         "allowed: initial, factor, cap, jitter, reset_after"),
        (one_child('id = "s"\ntype = "supervisor"\nintesity = 3'),
         'config.toml: tree.children[0] "s": unknown key "intesity" (did you mean "intensity"?); allowed: id, type, '
         "restart, shutdown, significant, backoff, strategy, intensity, period, auto_shutdown, children"),
    ],
)  # fmt: skip
def test_unknown_keys_anywhere_are_errors(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("intensity = true", "tree: intensity must be an integer >= 0; got true"),
        ("intensity = -1", "tree: intensity must be an integer >= 0; got -1"),
        ("intensity = 1.5", "tree: intensity must be an integer >= 0; got 1.5"),
        ("period = 0", "tree: period must be an integer >= 1 (seconds); got 0"),
        ('strategy = "one_for_some"',
         "tree: strategy must be one of one_for_one, one_for_all, rest_for_one, simple_one_for_one; got 'one_for_some'"),
        ('auto_shutdown = "sometimes"',
         "tree: auto_shutdown must be one of never, any_significant, all_significant; got 'sometimes'"),
    ],
)  # fmt: skip
def test_bad_supervisor_flags(flags: str, expected: str) -> None:
    assert problems(one_child('id = "c"\nstart = "m:C"', flags=flags)) == [f"config.toml: {expected}"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("shutdown = -5", 'shutdown must be milliseconds >= 0, "brutal_kill" or "infinity"; got -5'),
        ('shutdown = "later"', "shutdown must be milliseconds >= 0, \"brutal_kill\" or \"infinity\"; got 'later'"),
        ("shutdown = 1.5", 'shutdown must be milliseconds >= 0, "brutal_kill" or "infinity"; got 1.5'),
        ('restart = "forever"', "restart must be one of permanent, transient, temporary; got 'forever'"),
        ('significant = "yes"', "significant must be true or false; got 'yes'"),
        ("args = 5", "args must be a table (keyword arguments for init); got 5 (integer)"),
        ("start_timeout = -1", "start_timeout must be a number > 0 (seconds); got -1"),
        ("start_timeout = nan", "start_timeout must be a number > 0 (seconds); got nan"),
        ("start_timeout = true", "start_timeout must be a number > 0 (seconds); got true"),
        ("heartbeat = { interval = -0.5 }", "heartbeat.interval must be a number > 0 (seconds); got -0.5"),
        ("heartbeat = { misses = 0 }", "heartbeat.misses must be an integer >= 1; got 0"),
        ("heartbeat = 3", "heartbeat must be a table; got 3 (integer)"),
        ("backoff = 3", "backoff must be a table or true (for the defaults); got 3 (integer)"),
        ("backoff = { factor = 0.5 }", "backoff.factor must be a number >= 1; got 0.5"),
        ("backoff = { initial = 1.0, cap = 0.5 }", "backoff.cap must be >= backoff.initial (1); got 0.5"),
        ("backoff = { reset_after = inf }", "backoff.reset_after must be a number > 0 (seconds); got inf"),
        ("retry = { attempts = 0 }", "retry.attempts must be an integer >= 1; got 0"),
        ('retry = { wait = "linear" }',
         "retry.wait must be one of fixed, exponential, random_exponential, decorrelated; got 'linear'"),
        ("retry = { multiplier = 0.5 }", "retry.multiplier must be a number >= 1; got 0.5"),
        ("retry = { deadline = 0 }", "retry.deadline must be a number > 0 (seconds); got 0"),
        ("retry = { deadline = 1.0, per_attempt_timeout = 2.0 }",
         "retry.per_attempt_timeout must be <= retry.deadline (1); got 2"),
        ('retry = { retry_on = ["timeout", "exitted"] }',
         "retry.retry_on has an unknown failure 'exitted' (did you mean \"exited\"?); "
         "allowed: timeout, exited, unavailable, busy, error"),
        ('retry = { retry_on = "timeout" }',
         "retry.retry_on must be an array of timeout, exited, unavailable, busy, error; got 'timeout'"),
        ("retry_budget = { ratio = -0.1 }", "retry_budget.ratio must be a number >= 0 (a fraction of requests); got -0.1"),
        ("retry_budget = { window = 0 }", "retry_budget.window must be a number > 0 (seconds); got 0"),
        ("retry_budget = { ratoi = 0.1 }",
         'unknown key "retry_budget.ratoi" (did you mean "retry_budget.ratio"?); allowed: ratio, window, min_per_s'),
        ("retry_calls = { elsewhere = { attempts = 2 } }",
         "retry_calls names 'elsewhere', which is not a worker id in the tree"),
        ("retry_calls = { db = 3 }", "retry_calls.db must be a table; got 3 (integer)"),
        ("retry_calls = { db = { attempts = 0 } }", "retry_calls.db.attempts must be an integer >= 1; got 0"),
        ('start = "nocolon"', "start must be \"module:Class\" (or a class); got 'nocolon'"),
        ("id = 5", "id must be a non-empty string of letters, digits, '_', '-' or '.'; got 5"),
        ('type = "thing"', "type must be one of worker, supervisor; got 'thing'"),
    ],
)  # fmt: skip
def test_bad_child_values_name_the_key_the_value_and_what_is_allowed(line: str, expected: str) -> None:
    keys = {"id": '"db"', "start": '"m:C"'} | dict([line.split(" = ", 1)])
    body = "\n".join(f"{key} = {value}" for key, value in keys.items())
    where = 'tree.children[0]' if line.startswith("id") else 'tree.children[0] "db"'
    assert problems(one_child(body)) == [f"config.toml: {where}: {expected}"]


def test_the_tree_is_required_and_tables_must_be_tables() -> None:
    assert problems('[node]\nname = "x"') == [
        "config.toml: [tree] is required: the root supervisor, with its children as [[tree.children]]"
    ]
    assert problems("tree = 5") == ["config.toml: [tree] must be a table; got 5 (integer)"]
    assert problems("[tree]\nchildren = 5") == [
        "config.toml: tree: children must be an array of tables ([[tree.children]]); got 5"
    ]


def test_node_settings_are_checked() -> None:
    assert problems('[node]\nname = "my app"\npreload = "json"\nheartbeat = { interval = 0 }\n[tree]') == [
        "config.toml: node: name must be a non-empty string of letters, digits, '_', '-' or '.'; got 'my app'",
        "config.toml: node: preload must be an array of non-empty strings; got 'json'",
        "config.toml: node: heartbeat.interval must be a number > 0 (seconds); got 0",
    ]


# ---------------------------------------------------------------------------
# Cross-field rules


def test_duplicate_ids_across_nesting_levels_name_both_places() -> None:
    text = one_child(
        """
        id = "db"
        start = "m:C"
        [[tree.children]]
        id = "mid"
        type = "supervisor"
        [[tree.children.children]]
        id = "db"
        start = "m:C"
        """
    )
    assert problems(text) == [
        'config.toml: tree.children[1].children[0] "db": duplicate id "db", also given at tree.children[0]; '
        "ids name workers node-wide, so they are unique in the whole tree"
    ]


def test_the_root_id_is_taken() -> None:
    assert problems(one_child('id = "root"\nstart = "m:C"')) == [
        'config.toml: tree.children[0] "root": id "root" is taken by the root supervisor [tree]; choose another id'
    ]


def test_a_missing_id_is_named_by_position() -> None:
    assert problems(one_child('start = "m:C"')) == [
        "config.toml: tree.children[0]: id is required (a name unique in the whole tree)"
    ]


def test_a_worker_needs_start() -> None:
    assert problems(one_child('id = "w"\nargs = { a = 1 }')) == [
        'config.toml: tree.children[0] "w": start is required for a worker: "module:Class" (or command = [...] for a program)'
    ]


def test_supervisor_flags_on_a_worker_and_worker_keys_on_a_supervisor() -> None:
    text = one_child(
        """
        id = "w"
        start = "m:C"
        strategy = "one_for_all"
        [[tree.children]]
        id = "s"
        type = "supervisor"
        start = "m:C"
        args = {}
        """
    )
    assert problems(text) == [
        'config.toml: tree.children[0] "w": strategy is only for type = "supervisor"; this child is a worker',
        'config.toml: tree.children[1] "s": start is only for type = "worker"; this child is a supervisor',
        'config.toml: tree.children[1] "s": args is only for type = "worker"; this child is a supervisor',
    ]


def test_children_without_type_supervisor_is_reported() -> None:
    found = problems(one_child('id = "mid"\n[[tree.children.children]]\nid = "w"\nstart = "m:C"'))
    assert 'config.toml: tree.children[0] "mid": children is only for type = "supervisor"; this child is a worker' in found


def test_significant_on_a_permanent_child() -> None:
    text = one_child('id = "s"\nstart = "m:C"\nsignificant = true', flags='auto_shutdown = "any_significant"')
    assert problems(text) == [
        'config.toml: tree.children[0] "s": significant = true is not allowed on a permanent child '
        '(use restart = "transient" or "temporary")'
    ]


def test_significant_under_auto_shutdown_never() -> None:
    text = one_child('id = "s"\nstart = "m:C"\nrestart = "transient"\nsignificant = true')
    assert problems(text) == [
        'config.toml: tree.children[0] "s": significant = true needs the supervisor\'s auto_shutdown to be '
        '"any_significant" or "all_significant"; it is "never"'
    ]


def test_significant_breaking_both_rules_gets_both_messages() -> None:
    found = problems(one_child('id = "s"\nstart = "m:C"\nsignificant = true'))
    assert len(found) == 2 and "never" in found[0] and "permanent" in found[1]


def test_significant_transient_under_any_significant_is_fine() -> None:
    text = one_child('id = "s"\nstart = "m:C"\nrestart = "transient"\nsignificant = true',
                     flags='auto_shutdown = "any_significant"')  # fmt: skip
    assert parse_config(text, check_imports=False).tree.children[0].significant


@pytest.mark.parametrize("count", [0, 2])
def test_simple_one_for_one_needs_exactly_one_spec(count: int) -> None:
    children = "".join(f'[[tree.children]]\nid = "t{i}"\nstart = "m:C"\n' for i in range(count))
    assert problems(f'[tree]\nstrategy = "simple_one_for_one"\n{children}') == [
        "config.toml: tree: a simple_one_for_one supervisor needs exactly one child spec "
        f"(the template for start_child); got {count}"
    ]


def test_a_nested_simple_one_for_one_is_named_by_its_id() -> None:
    text = one_child('id = "pool"\ntype = "supervisor"\nstrategy = "simple_one_for_one"')
    assert problems(text) == [
        'config.toml: tree.children[0] "pool": a simple_one_for_one supervisor needs exactly one child spec '
        "(the template for start_child); got 0"
    ]


def test_every_problem_is_reported_together_in_file_order() -> None:
    text = """
        [tree]
        intensity = -1
        [[tree.children]]
        id = "a"
        start = "m:C"
        shutdown = -5
        [[tree.children]]
        id = "a"
        restart = "forever"
        [profile.trigger]
        engine = "perf"
        mailbox_depth = 10
        """
    found = problems(text)
    assert found == [
        "config.toml: tree: intensity must be an integer >= 0; got -1",
        'config.toml: tree.children[0] "a": shutdown must be milliseconds >= 0, "brutal_kill" or "infinity"; got -5',
        'config.toml: tree.children[1] "a": duplicate id "a", also given at tree.children[0]; '
        "ids name workers node-wide, so they are unique in the whole tree",
        "config.toml: tree.children[1] \"a\": restart must be one of permanent, transient, temporary; got 'forever'",
        'config.toml: tree.children[1] "a": start is required for a worker: "module:Class" (or command = [...] for a program)',
        "config.toml: profile: trigger.engine must be one of py-spy, yappi; got 'perf'",
    ]
    assert str(ConfigError(found)) == "\n".join(found)


def test_config_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(ConfigError(["a", "b"])))
    assert error.problems == ["a", "b"] and str(error) == "a\nb"


# ---------------------------------------------------------------------------
# [profile]


def test_profile_trigger_is_checked_against_the_tree() -> None:
    text = one_child(
        'id = "counter"\nstart = "m:C"\n[[tree.children]]\nid = "mid"\ntype = "supervisor"\n'
        '[profile.trigger]\ncall_p99_ms = -1\ncooldown = -3\nworkers = ["cuonter", "mid"]'
    )
    assert problems(text) == [
        "config.toml: profile: trigger.call_p99_ms must be a number > 0 (ms); got -1",
        "config.toml: profile: trigger.cooldown must be a number >= 0 (seconds); got -3",
        'config.toml: profile: trigger.workers[0] "cuonter" is not a worker id in the tree '
        '(did you mean "counter"?); workers: counter',
        'config.toml: profile: trigger.workers[1] "mid" is a supervisor; only workers are profiled',
    ]


def test_a_trigger_without_a_threshold_never_fires_so_it_is_an_error() -> None:
    assert problems(one_child('id = "c"\nstart = "m:C"') + '\n[profile.trigger]\nduration = 5') == [
        "config.toml: profile: trigger needs mailbox_depth or call_p99_ms (or both); without a threshold it never fires"
    ]


# ---------------------------------------------------------------------------
# Imports (check_imports=True): modules written into tmp_path


def write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.mark.usefixtures("fresh_modules")
def test_start_imports_from_the_config_directory_and_restores_sys_path(tmp_path: Path) -> None:
    write_module(tmp_path, "cfgt_good", "from supervisor_tree import Worker as Base\nclass Worker(Base):\n    pass\n")
    (tmp_path / "config.toml").write_text(one_child('id = "w"\nstart = "cfgt_good:Worker"'))
    path_before = list(sys.path)
    spec = load_config(tmp_path / "config.toml")
    assert spec.tree.children[0].start == "cfgt_good:Worker"
    assert sys.path == path_before


@pytest.mark.usefixtures("fresh_modules")
@pytest.mark.parametrize(
    ("module_source", "start", "expected"),
    [
        (None, "cfgt_myap:Counter", 'cannot import module "cfgt_myap": No module named \'cfgt_myap\''),
        ("class Counter: pass\n", "cfgt_app:Cunter", 'module cfgt_app has no attribute "Cunter"'),
        ("COUNT = 3\n", "cfgt_app:COUNT", "cfgt_app.COUNT is not a class or callable; it is a int"),
        ("class Outer:\n    pass\n", "cfgt_app:Outer.Inner", 'cfgt_app.Outer has no attribute "Inner"'),
        ('raise RuntimeError("no database\\nconfigured")\n', "cfgt_app:Counter",
         'cannot import module "cfgt_app": importing it raised RuntimeError: no database configured'),
        ("import sys\nsys.exit(3)\n", "cfgt_app:Counter",
         'cannot import module "cfgt_app": importing it raised SystemExit: 3'),
        ("def broken(:\n", "cfgt_app:Counter",
         'cannot import module "cfgt_app": importing it raised SyntaxError: invalid syntax (cfgt_app.py, line 1)'),
    ],
)  # fmt: skip
def test_a_start_that_cannot_be_imported_is_reported_in_one_line(
    tmp_path: Path, module_source: str | None, start: str, expected: str
) -> None:
    if module_source is not None:
        write_module(tmp_path, "cfgt_app", module_source)
    path_before = list(sys.path)
    found = problems(one_child(f'id = "counter"\nstart = "{start}"'), check_imports=True, config_dir=str(tmp_path))
    assert found == [f'config.toml: tree.children[0] "counter": start "{start}": {expected}']
    assert sys.path == path_before


@pytest.mark.usefixtures("fresh_modules")
def test_preload_modules_are_imported_too(tmp_path: Path) -> None:
    assert problems('[node]\npreload = ["cfgt_missing"]\n[tree]', check_imports=True, config_dir=str(tmp_path)) == [
        'config.toml: node: preload[0] "cfgt_missing": cannot import module "cfgt_missing": '
        "No module named 'cfgt_missing'"
    ]


def test_check_imports_false_imports_nothing() -> None:
    spec = parse_config(one_child('id = "w"\nstart = "cfgt_nowhere:W"'), check_imports=False)
    assert spec.tree.children[0].start == "cfgt_nowhere:W" and "cfgt_nowhere" not in sys.modules


# ---------------------------------------------------------------------------
# describe


def test_describe_counts_and_draws_the_tree() -> None:
    spec = parse_config(GOOD, check_imports=False)
    assert describe(spec) == textwrap.dedent(
        """\
        ok: 3 supervisors, 3 workers
        root  rest_for_one  intensity 5 per 10 s
          counter  worker  myapp.counter:Counter  transient  shutdown brutal_kill
          mid  supervisor  one_for_all  intensity 1 per 5 s  auto_shutdown any_significant  permanent  shutdown infinity
            w1  worker  myapp:W  permanent  shutdown 5000 ms
            leaf  supervisor  one_for_one  intensity 1 per 5 s  transient  shutdown infinity  significant
              w2  worker  myapp:W  permanent  shutdown 5000 ms"""
    )


def test_describe_marks_a_simple_one_for_one_template() -> None:
    spec = parse_config('[tree]\nstrategy = "simple_one_for_one"\n[[tree.children]]\nid = "conn"\nstart = "m:C"',
                        check_imports=False)  # fmt: skip
    assert describe(spec).splitlines() == [
        "ok: 1 supervisor, 1 worker",
        "root  simple_one_for_one  intensity 1 per 5 s",
        "  conn  worker (template)  m:C  permanent  shutdown 5000 ms",
    ]


# ---------------------------------------------------------------------------
# The shipped examples parse (without importing their workers)


@pytest.mark.parametrize("name", ["counter/config.toml", "nested.toml"])
def test_the_examples_are_valid(name: str) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    spec = load_config(examples / name, check_imports=False)
    assert describe(spec).startswith("ok: ")
    assert not math.isnan(spec.heartbeat.interval)
