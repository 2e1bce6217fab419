"""TOML in, a validated NodeSpec or one ConfigError out.

Owns reading a node's config file, checking every key of it, and mapping it onto
spec.py's frozen specs with OTP's defaults filled in (R14).  It collects *every*
problem before raising, each on one line naming the file, the key path, the value and
what is allowed.  No I/O beyond reading the file and, when asked, importing the
modules named by `start` and `preload` (with the config's directory first on sys.path).
Must not start, fork or connect anything.

    >>> spec = parse_config('''
    ... [tree]
    ... [[tree.children]]
    ... id = "counter"
    ... start = "myapp:Counter"
    ... ''', check_imports=False)
    >>> spec.tree.children[0].shutdown.timeout_ms
    5000
    >>> try:
    ...     parse_config('[tree]\\n[[tree.children]]\\nid = "c"\\nrestrat = 1', source="config.toml")
    ... except ConfigError as exc:
    ...     print(exc)
    config.toml: tree.children[0] "c": unknown key "restrat" (did you mean "restart"?); allowed: id, start, args, restart, shutdown, type, significant, start_timeout, backoff, retry, retry_budget, retry_calls, heartbeat, max_concurrency, mailbox_limit, mailbox_overflow, oom_score_adj, command, env, cwd, stop_signal, ready
    config.toml: tree.children[0] "c": start is required for a worker: "module:Class" (or command = [...] for a program)
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from supervisor_tree.config.errors import ConfigError
from supervisor_tree.config.imports import args_problem, current_name, module_problem, target_problem
from supervisor_tree.config.placement import check_placed, read_backend, read_placement
from supervisor_tree.config.ports import read_command
from supervisor_tree.config.retry import read_budget, read_retry, read_retry_calls, unknown_callee
from supervisor_tree.config.schema import (
    BACKOFF_KEYS,
    HEARTBEAT_KEYS,
    LOGS_KEYS,
    METRICS_KEYS,
    NODE_KEYS,
    PORT_KEYS,
    PROFILE_ENGINES,
    PROFILE_KEYS,
    SUPERVISOR_KEYS,
    SUPERVISOR_ONLY_KEYS,
    TOP_KEYS,
    TREE_KEYS,
    TRIGGER_KEYS,
    WORKER_KEYS,
    WORKER_ONLY_KEYS,
    Table,
    check_int,
    check_limit,
    check_name,
    check_number,
    check_port,
    check_string,
    check_string_list,
    check_table,
    type_name,
)  # fmt: skip
from supervisor_tree.spec import (
    INFINITY,
    WORKER_OOM_SCORE_ADJ,
    WORKER_SHUTDOWN_DEFAULT,
    AutoShutdown,
    Backoff,
    ChildSpec,
    ChildType,
    Heartbeat,
    NodeSpec,
    Overflow,
    Restart,
    RetryPolicy,
    Shutdown,
    StartTarget,
    Strategy,
    SupervisorSpec,
    _got,
    check_enum,
    check_id,
    check_intensity,
    check_max_concurrency,
    check_oom_score_adj,
    check_period,
    check_shutdown,
    check_significant,
    check_start,
)  # fmt: skip

__all__ = ["ConfigError", "load_config", "parse_config", "node_spec_from_mapping"]

ROOT_ID = "root"
DEFAULT_NODE_NAME = NodeSpec(tree=SupervisorSpec()).name


def load_config(path: str | os.PathLike[str], *, check_imports: bool = True) -> NodeSpec:
    """Read and validate a config file; messages name it as `path` was given."""
    shown = os.fspath(path)
    try:
        text = Path(shown).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"{shown}: cannot read the config: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{shown}: the config is not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    absolute = os.path.abspath(shown)
    spec = parse_config(text, source=shown, config_dir=os.path.dirname(absolute), check_imports=check_imports)
    return dataclasses.replace(spec, source=absolute)


def parse_config(text: str, *, source: str = "<config>", config_dir: str | None = None,
                 check_imports: bool = True) -> NodeSpec:  # fmt: skip
    """Validate config text; `config_dir` anchors relative paths and goes first on sys.path."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(source, exc)]) from None
    return node_spec_from_mapping(data, source=source, config_dir=config_dir, check_imports=check_imports)


def node_spec_from_mapping(data: Mapping[str, object], *, source: str, config_dir: str | None,
                           check_imports: bool) -> NodeSpec:  # fmt: skip
    """Validate a config already parsed (or written as a dict, like the built-in tree)."""
    if not isinstance(data, Mapping):
        raise ConfigError([f"{source}: the config must be a table; got {_got(data)} ({type_name(data)})"])
    if config_dir is not None:
        config_dir = os.path.abspath(config_dir)
    return _Reader(source, config_dir, check_imports).node(data)


def _syntax_problem(source: str, exc: tomllib.TOMLDecodeError) -> str:
    """`file: line 4, column 9: <tomllib's message>` (tomllib puts the position at the end)."""
    message = str(exc)
    at = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if at:
        return f"{source}: line {at[1]}, column {at[2]}: {message[: at.start()]}"
    end = re.search(r"\s*\(at end of document\)$", message)
    if end:
        return f"{source}: at the end of the file: {message[: end.start()]}"
    return f"{source}: {message}"


class _Reader:
    """One pass over one config: the problems found so far and the ids already taken.

    Invariant: `ids` maps every id met so far (and "root") to the key path that gave it,
    so a duplicate anywhere in the tree can name both places.
    """

    def __init__(self, source: str, config_dir: str | None, check_imports: bool) -> None:
        self.source = source
        self.config_dir = config_dir
        self.check_imports = check_imports
        self.problems: list[str] = []
        self.ids: dict[str, str] = {ROOT_ID: "tree"}
        self.worker_ids: list[str] = []
        self._import_problems: dict[str, str | None] = {}
        self.callees: list[tuple[Table, str]] = []  # (child table, callee id) from retry_calls
        self.placed: list[tuple[Table, bool]] = []  # (worker table, is a port): checked against the backend

    def report(self, where: str, message: str) -> None:
        self.problems.append(f"{self.source}: {where}: {message}" if where else f"{self.source}: {message}")

    def node(self, data: Mapping[str, object]) -> NodeSpec:
        top = Table(data, "", self.report)
        top.reject_unknown(TOP_KEYS)
        node = self._table_at(top, "node")
        name, preload, heartbeat = self._node(node) if node else (DEFAULT_NODE_NAME, (), Heartbeat())
        logs = self._logs(node)
        backend = read_backend(node, self.check_imports)
        tree_table = self._table_at(top, "tree")
        if tree_table is None and "tree" not in data:
            self.report("", "[tree] is required: the root supervisor, with its children as [[tree.children]]")
        tree = self._supervisor(tree_table, "tree") if tree_table else SupervisorSpec()
        profile = self._profile(self._table_at(top, "profile"))
        metrics = self._metrics(self._table_at(top, "metrics"))
        for t, callee in self.callees:
            self._report_if(t, unknown_callee(callee, self.worker_ids))
        for t, is_port in self.placed:
            check_placed(t, backend, is_port)
        if self.problems:
            raise ConfigError(self.problems)
        return NodeSpec(tree=tree, name=name, source=self.source, config_dir=self.config_dir,
                        heartbeat=heartbeat, preload=preload,
                        extra={"profile": profile, "logs": logs, "metrics": metrics, "backend": backend})  # fmt: skip

    def _table_at(self, top: Table, key: str) -> Table | None:
        if key not in top.data:
            return None
        value = top.data[key]
        problem = check_table(f"[{key}]", value)
        if problem:
            self.report("", problem)
            return None
        assert isinstance(value, Mapping)
        return Table(value, key, self.report)

    # -- [node] ---------------------------------------------------------------

    def _node(self, t: Table) -> tuple[str, tuple[str, ...], Heartbeat]:
        t.reject_unknown(NODE_KEYS)
        name = t.get("name", check_name, str, DEFAULT_NODE_NAME)
        preload: tuple[str, ...] = t.get("preload", lambda v: check_string_list("preload", v), tuple, ())
        if self.check_imports:
            for i, module in enumerate(preload):
                problem = module_problem(module, self.config_dir)
                if problem:
                    t.report(f'preload[{i}] "{module}": {problem}')
        return name, preload, self._heartbeat(t) or Heartbeat()

    def _logs(self, node: Table | None) -> dict[str, int]:
        """[node] logs = { max_bytes, backups }: when RUN/logs/ID.log, RUN/node.log and RUN/events.jsonl are
        rotated, and how many old files stay."""
        limits = {"max_bytes": 10 * 2**20, "backups": 3}
        t = node.sub_table("logs") if node is not None else None
        if t is not None:
            t.reject_unknown(LOGS_KEYS)
            limits = {"max_bytes": t.integer("max_bytes", limits["max_bytes"], at_least=1024, unit="bytes"),
                      "backups": t.integer("backups", limits["backups"], at_least=0, unit="files")}  # fmt: skip
        return limits

    def _heartbeat(self, t: Table) -> Heartbeat | None:
        h = t.sub_table("heartbeat")
        if h is None:
            return None
        h.reject_unknown(HEARTBEAT_KEYS)
        default = Heartbeat()
        return Heartbeat(h.number("interval", default.interval, above=0),
                         h.integer("misses", default.misses, at_least=1))  # fmt: skip

    # -- supervisors and children ---------------------------------------------

    def _supervisor(self, t: Table, path: str) -> SupervisorSpec:
        """The flags and children of the supervisor whose table is `t` at key path `path`."""
        if path == "tree":
            t.reject_unknown(TREE_KEYS)
        strategy = t.get("strategy", lambda v: check_enum("strategy", v, Strategy), Strategy, Strategy.ONE_FOR_ONE)
        intensity = t.get("intensity", check_intensity, int, 1)
        period = t.get("period", check_period, int, 5)
        auto_shutdown = t.get("auto_shutdown", lambda v: check_enum("auto_shutdown", v, AutoShutdown),
                              AutoShutdown, AutoShutdown.NEVER)  # fmt: skip
        auto_known = "auto_shutdown" not in t.bad
        raw_children = t.data.get("children", [])
        if not isinstance(raw_children, (list, tuple)):
            t.report(f"children must be an array of tables ([[{path}.children]]); got {_got(raw_children)}")
            raw_children = []
        if strategy is Strategy.SIMPLE_ONE_FOR_ONE and len(raw_children) != 1:
            t.report(f"a simple_one_for_one supervisor needs exactly one child spec (the template for "
                     f"start_child); got {len(raw_children)}")  # fmt: skip
        children = []
        for i, raw in enumerate(raw_children):
            child_path = f"{path}.children[{i}]"
            if not isinstance(raw, Mapping):
                self.report("", f"{child_path} must be a table (a child spec); got {_got(raw)} ({type_name(raw)})")
                continue
            children.append(self._child(Table(raw, child_path, self.report), child_path, auto_shutdown, auto_known,
                                        strategy is Strategy.SIMPLE_ONE_FOR_ONE))
        return SupervisorSpec(strategy, intensity, period, auto_shutdown, tuple(children))

    def _child(self, t: Table, path: str, auto_shutdown: AutoShutdown, auto_known: bool, template: bool) -> ChildSpec:
        child_id = self._child_id(t, path)
        kind = t.get("type", lambda v: check_enum("type", v, ChildType), ChildType, ChildType.WORKER)
        kind_known = "type" not in t.bad
        if not kind_known:  # keep checking the rest as what it most looks like
            looks_nested = any(key in t.data for key in SUPERVISOR_ONLY_KEYS)
            kind = ChildType.SUPERVISOR if looks_nested else ChildType.WORKER
        is_worker = kind is ChildType.WORKER
        t.reject_unknown(WORKER_KEYS if is_worker else SUPERVISOR_KEYS, known=(*WORKER_KEYS, *SUPERVISOR_KEYS))
        if kind_known:
            for key in SUPERVISOR_ONLY_KEYS if is_worker else WORKER_ONLY_KEYS:
                if key in t.data:
                    t.report(f'{key} is only for type = "{"supervisor" if is_worker else "worker"}"; '
                             f"this child is a {kind.value}")  # fmt: skip
        restart = t.get("restart", lambda v: check_enum("restart", v, Restart), Restart, Restart.PERMANENT)
        default_shutdown = WORKER_SHUTDOWN_DEFAULT if is_worker else INFINITY  # filled in, as OTP does (R14)
        shutdown = t.get("shutdown", check_shutdown, Shutdown.parse, default_shutdown)
        significant = t.flag("significant", False)
        if significant and auto_known:
            self._report_if(t, check_significant(True, Restart.TRANSIENT, auto_shutdown))
        if significant and "restart" not in t.bad:
            self._report_if(t, check_significant(True, restart, AutoShutdown.ANY_SIGNIFICANT))
        backoff = self._backoff(t)
        if not is_worker:
            nested = self._supervisor(t, path)
            return ChildSpec(id=child_id, type=ChildType.SUPERVISOR, supervisor=nested, restart=restart,
                             shutdown=shutdown, significant=significant, backoff=backoff)  # fmt: skip
        if child_id not in self.worker_ids:
            self.worker_ids.append(child_id)
        command = None
        if "command" in t.data:
            command = read_command(t, self.config_dir, self.check_imports)
            for key in ("start", "args", "max_concurrency"):
                if key in t.data:
                    t.report(f"{key} is for a Python worker; this child runs a program (command)")
            start = None
        else:
            for key in PORT_KEYS[1:]:
                if key in t.data:
                    t.report(f"{key} is only for a child that runs a program (command = [...]); this one has start")
            start = self._start(t)
        args: dict[str, object] = t.get(
            "args", lambda v: check_table("args", v, " (keyword arguments for init)"), dict, {})
        resources, node_affinity = read_placement(t)
        self.placed.append((t, command is not None))
        if isinstance(start, str) and self.check_imports and self._import_problems.get(start, "") is None:
            self._report_if(t, args_problem(start, args, self.config_dir, template=template))
        return ChildSpec(id=child_id, start=start, args=args, restart=restart, shutdown=shutdown,
                         significant=significant, backoff=backoff,
                         start_timeout=t.number("start_timeout", 30.0, above=0), retry=read_retry(t),
                         retry_budget=read_budget(t), retry_calls=self._retry_calls(t),
                         heartbeat=self._heartbeat(t), command=command,
                         max_concurrency=t.get("max_concurrency", check_max_concurrency, int, None),
                         mailbox_limit=t.get("mailbox_limit", check_limit, int, None),
                         mailbox_overflow=t.get("mailbox_overflow", lambda v: check_enum("mailbox_overflow", v, Overflow),
                                                Overflow, Overflow.BACKPRESSURE),
                         oom_score_adj=t.get("oom_score_adj", check_oom_score_adj, int, WORKER_OOM_SCORE_ADJ),
                         resources=resources, node_affinity=node_affinity)  # fmt: skip

    def _retry_calls(self, t: Table) -> dict[str, RetryPolicy]:
        calls = read_retry_calls(t)
        self.callees += [(t, callee) for callee in calls]  # checked once every worker id is known
        return calls

    def _child_id(self, t: Table, path: str) -> str:
        """Check the id, claim it tree-wide, and name the child by it in later messages."""
        if "id" not in t.data:
            t.report("id is required (a name unique in the whole tree)")
            return "?"
        child_id = t.data["id"]
        problem = check_id(child_id)
        if problem:
            t.report(problem)
            return "?"
        assert isinstance(child_id, str)
        t.where = f'{path} "{child_id}"'
        if child_id == ROOT_ID:
            t.report(f'id "{ROOT_ID}" is taken by the root supervisor [tree]; choose another id')
        elif child_id in self.ids:
            t.report(f'duplicate id "{child_id}", also given at {self.ids[child_id]}; '
                     "ids name workers node-wide, so they are unique in the whole tree")  # fmt: skip
        else:
            self.ids[child_id] = path
        return child_id

    def _start(self, t: Table) -> StartTarget | None:
        if "start" not in t.data:
            t.report('start is required for a worker: "module:Class" (or command = [...] for a program)')
            return None
        start: StartTarget | None = t.get("start", check_start, lambda v: v, None)
        if isinstance(start, str):
            start = current_name(start, f"{self.source}: {t.where}", self.config_dir)
        if isinstance(start, str) and self.check_imports:
            if start not in self._import_problems:
                self._import_problems[start] = target_problem(start, self.config_dir)
            self._report_if(t, self._import_problems[start], f'start "{start}": ')
        return start

    @staticmethod
    def _report_if(t: Table, problem: str | None, lead: str = "") -> None:
        if problem:
            t.report(lead + problem)

    def _backoff(self, t: Table) -> Backoff | None:
        value = t.data.get("backoff")
        if isinstance(value, bool):
            return Backoff() if value else None
        b = t.sub_table("backoff", what=" or true (for the defaults)")
        if b is None:
            return None
        b.reject_unknown(BACKOFF_KEYS)
        d = Backoff()
        initial = b.number("initial", d.initial, at_least=0)
        factor = b.number("factor", d.factor, at_least=1, unit="")
        cap = b.number("cap", d.cap, above=0)
        if not {"initial", "cap"} & b.bad and cap < initial:
            b.report(f"backoff.cap must be >= backoff.initial ({initial:g}); got {cap:g}")
        return Backoff(initial, factor, cap, b.flag("jitter", d.jitter), b.number("reset_after", d.reset_after, above=0))

    # -- [profile] --------------------------------------------------------------

    def _profile(self, t: Table | None) -> dict[str, object]:
        """The [profile] table as a plain dict, defaults filled, `dir` made absolute."""
        directory = "profiles"
        trigger: dict[str, object] | None = None
        if t is not None:
            t.reject_unknown(PROFILE_KEYS)
            directory = t.get("dir", lambda v: check_string("dir", v), str, directory)
            trigger_table = t.sub_table("trigger")
            if trigger_table is not None:
                trigger = self._trigger(trigger_table)
        if self.config_dir is not None:
            directory = os.path.join(self.config_dir, directory)
        return {"dir": directory, "trigger": trigger}

    def _metrics(self, t: Table | None) -> dict[str, object]:
        """[metrics]: the Prometheus endpoint `supervise start` serves on 127.0.0.1 (port), its series cap."""
        if t is None:
            return {"port": None, "max_workers": 500}
        t.reject_unknown(METRICS_KEYS)
        port = t.get("port", check_port, int, None)
        return {"port": port, "max_workers": t.integer("max_workers", 500, at_least=1)}

    def _trigger(self, t: Table) -> dict[str, object]:
        t.reject_unknown(TRIGGER_KEYS)
        depth = t.get("mailbox_depth", lambda v: check_int("trigger.mailbox_depth", v, at_least=1), int, None)
        p99 = t.get("call_p99_ms", lambda v: check_number("trigger.call_p99_ms", v, above=0, unit="ms"), float, None)
        if "mailbox_depth" not in t.data and "call_p99_ms" not in t.data:
            t.report("trigger needs mailbox_depth or call_p99_ms (or both); without a threshold it never fires")
        cooldown = t.number("cooldown", 300.0, at_least=0)
        duration = t.number("duration", 10.0, above=0)
        engine = t.choice("engine", PROFILE_ENGINES, "py-spy")
        workers: list[str] | None = t.get("workers", lambda v: check_string_list("trigger.workers", v), list, None)
        for i, worker in enumerate(workers or ()):
            self._report_if(t, self._not_a_worker(worker), f'trigger.workers[{i}] "{worker}" ')
        return {"mailbox_depth": depth, "call_p99_ms": p99, "cooldown": cooldown, "duration": duration,
                "engine": engine, "workers": workers}  # workers None: every worker  # fmt: skip

    def _not_a_worker(self, worker_id: str) -> str | None:
        if worker_id in self.worker_ids:
            return None
        if worker_id in self.ids:
            return "is a supervisor; only workers are profiled"
        close = difflib.get_close_matches(worker_id, self.worker_ids, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        return f"is not a worker id in the tree{hint}; workers: {', '.join(self.worker_ids) or '(none)'}"
