"""The restart intensity window (R4, R5): whole seconds, one counter, checked before every attempt."""

from __future__ import annotations

import pytest

from supervisor_tree.otp import supervisor as sv
from supervisor_tree.otp.intensity import add_restart
from supervisor_tree.spec import SHUTDOWN, Strategy, error
from tests.unit.driver import FakeRuntime, tree, worker

CRASH = error("crash")


@pytest.mark.parametrize(
    ("window", "now", "intensity", "period", "expected"),
    [
        ((), 0.0, 0, 5, ((0,), False)),  # intensity 0: the first restart is one too many (S12)
        ((), 7.9, 1, 5, ((7,), True)),  # whole seconds: 7.9 is second 7
        ((7,), 8.2, 1, 5, ((8, 7), False)),
        ((7,), 12.99, 1, 5, ((12, 7), False)),  # 12 - 5 = 7: second 7 still counts
        ((7,), 13.0, 1, 5, ((13,), True)),  # 13 - 5 = 8: forgotten
        ((9, 8, 1), 10.0, 3, 5, ((10, 9, 8), True)),  # only the old one is dropped
        ((9, 8, 7), 10.0, 3, 5, ((10, 9, 8, 7), False)),
    ],
)
def test_add_restart(
    window: tuple[int, ...], now: float, intensity: int, period: int, expected: tuple[tuple[int, ...], bool]
) -> None:
    assert add_restart(window, now, intensity, period) == expected


@pytest.mark.parametrize("period", [1, 2, 5, 10])
@pytest.mark.parametrize("offset", [0.0, 0.1, 0.5, 0.75, 0.99])
def test_gaps_up_to_period_always_count_and_from_period_plus_one_never(period: int, offset: float) -> None:
    """R4's deterministic band, wherever the second boundaries fall."""
    first, _ = add_restart((), 100 + offset, 1, period)
    assert add_restart(first, 100 + offset + period, 1, period)[1] is False
    assert add_restart(first, 100 + offset + period + 1, 1, period)[1] is True


def test_restarts_of_all_children_share_one_counter() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"), intensity=1, period=5)).start()
    rt.crash("a", CRASH)
    rt.crash("b", CRASH)
    assert rt.exits["sup"] == SHUTDOWN


def test_the_window_forgets_old_restarts() -> None:
    rt = FakeRuntime(tree(worker("a"), intensity=2, period=5)).start()
    for _ in range(10):  # a crash every 3 s: at most two in any window
        rt.crash("a", CRASH)
        rt.advance(3.0)
    assert rt.state().phase is sv.Phase.RUNNING
    assert len(rt.state().restarts) == 2


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
def test_a_group_is_not_touched_when_intensity_gives_up(strategy: Strategy) -> None:
    """R5: the failing child is not restarted; the others are stopped, not restarted."""
    rt = FakeRuntime(tree(worker("a"), worker("b"), worker("c"), strategy=strategy, intensity=0)).start()
    mark = len(rt.trace)
    rt.crash("b", CRASH)
    assert rt.lines(mark) == [
        "exit b#1 reason=crash",
        "log[child_terminated] b#1 reason=crash",
        "log[shutdown] b#1 reason=reached_max_restart_intensity",
        "exit c#1 reason=shutdown",
        "exit a#1 reason=shutdown",
        "exit sup#1 reason=shutdown",
    ]
    reports = [a for _, a in rt.actions if isinstance(a, sv.Report)]
    give_up = [r for r in reports if r.kind is sv.ReportKind.REACHED_MAX_RESTART_INTENSITY]
    assert [(r.key, r.detail) for r in give_up] == [("b", {"intensity": 0, "period": 10})]


def test_every_retry_is_checked_and_charged() -> None:
    """R4/R7 (S26): a retry after a failed start passes the intensity check again."""
    rt = FakeRuntime(tree(worker("a"), intensity=3, period=60)).start()
    rt.fail_starts("a", "error", "error")
    rt.crash("a", CRASH)
    assert rt.state().phase is sv.Phase.RUNNING
    assert len(rt.state().restarts) == 3  # the restart and its two retries
    rt.crash("a", CRASH)
    assert rt.exits["sup"] == SHUTDOWN


def test_terminate_and_restart_child_are_not_restarts() -> None:
    rt = FakeRuntime(tree(worker("a"), intensity=0)).start()
    for _ in range(3):
        assert rt.call(sv.TerminateChildCall("a")) == sv.Ok()
        assert isinstance(rt.call(sv.RestartChildCall("a")), sv.Ok)
    assert rt.state().restarts == () and rt.state().phase is sv.Phase.RUNNING
