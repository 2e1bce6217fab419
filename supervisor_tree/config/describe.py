"""`describe`: what `supervise check` prints for a valid config, one indented line per child.

    >>> print(describe(parse_config('[tree]', check_imports=False)))   # doctest: +SKIP
    ok: 1 supervisor, 0 workers
    root  one_for_one  intensity 1 per 5 s
"""

from __future__ import annotations

from supervisor_tree.config.placement import Backend
from supervisor_tree.spec import AutoShutdown, NodeSpec, Shutdown, ShutdownKind, Strategy, SupervisorSpec

__all__ = ["describe"]

ROOT_ID = "root"


def describe(spec: NodeSpec) -> str:
    """``ok: 2 supervisors, 3 workers`` and the tree, one indented line per child."""
    supervisors, workers = _count(spec.tree)
    lines = [f"ok: {_plural(supervisors, 'supervisor')}, {_plural(workers, 'worker')}",
             f"{ROOT_ID}  {_flags(spec.tree)}"]  # fmt: skip
    backend = spec.extra.get("backend")
    if isinstance(backend, Backend) and not backend.is_local:
        lines.insert(1, f"backend {backend.kind}  address {backend.address}  node reached at {backend.host} "
                        "(tcp, CurveZMQ)")
    _describe_children(spec.tree, 1, lines)
    return "\n".join(lines)


def _count(sup: SupervisorSpec) -> tuple[int, int]:
    supervisors, workers = 1, 0
    for child in sup.children:
        if child.supervisor is not None:
            s, w = _count(child.supervisor)
            supervisors, workers = supervisors + s, workers + w
        else:
            workers += 1
    return supervisors, workers


def _describe_children(sup: SupervisorSpec, depth: int, lines: list[str]) -> None:
    template = " (template)" if sup.strategy is Strategy.SIMPLE_ONE_FOR_ONE else ""
    for child in sup.children:
        parts = [child.id, child.type.value + template]
        if child.supervisor is not None:
            parts.append(_flags(child.supervisor))
        elif child.command is not None:
            parts.append(f"command {child.command}  ready {child.command.ready}")
        else:
            start = child.start
            parts.append(start if isinstance(start, str) else getattr(start, "__qualname__", repr(start)))
        parts += [child.restart.value, f"shutdown {_shutdown(child.effective_shutdown)}"]
        if child.significant:
            parts.append("significant")
        if child.resources:
            parts.append("resources " + ",".join(f"{k}={v:g}" for k, v in sorted(child.resources.items())))
        if child.node_affinity:
            parts.append(f"on node {child.node_affinity[:12]}")
        lines.append("  " * depth + "  ".join(parts))
        if child.supervisor is not None:
            _describe_children(child.supervisor, depth + 1, lines)


def _flags(sup: SupervisorSpec) -> str:
    text = f"{sup.strategy.value}  intensity {sup.intensity} per {sup.period} s"
    if sup.auto_shutdown is not AutoShutdown.NEVER:
        text += f"  auto_shutdown {sup.auto_shutdown.value}"
    return text


def _shutdown(shutdown: Shutdown) -> str:
    return f"{shutdown.timeout_ms} ms" if shutdown.kind is ShutdownKind.TIMEOUT else shutdown.kind.value


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
