"""The typed clients' pipelined path: a component's replies from `Client.call_async` / `call_many`, typed.

Owns turning a pipelined call's outcome into what the typed client's one-call method
returns or raises: a component's refusal (`CallError` carrying its `RemoteError`) as the
component's own exception (`_component.reraise`), a reply checked to be of the
expected kind (`_component.expect`).  Must not know any one component.

    fut = typed_future(client.call_async("jobs", ("put", item)), _ERRORS, int, "queue: put")
    fut.result()            # the queued depth, or QueueFull
    typed_list(client.call_many("jobs", msgs, return_exceptions=True), _ERRORS, int, "queue: put")
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, TypeVar

from supervisor_tree.client import CallError
from supervisor_tree.workers._component import expect, reraise

__all__ = ["typed_future", "typed_list"]

_T = TypeVar("_T")


def _typed(value: object, errors: dict[str, type[Exception]], kind: type[_T] | None, what: str) -> _T | Any:
    if isinstance(value, CallError):
        reraise(value, errors)
    if isinstance(value, BaseException):
        raise value
    return value if kind is None else expect(value, kind, what)


def typed_future(fut: concurrent.futures.Future[Any], errors: dict[str, type[Exception]], kind: type[_T] | None,
                 what: str) -> concurrent.futures.Future[Any]:
    """A Future of `fut`'s reply as the typed client returns it (`kind`: its expected type; None: any)."""
    out: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def settle(done: concurrent.futures.Future[Any]) -> None:
        try:
            out.set_result(_typed(done.exception() or done.result(), errors, kind, what))
        except Exception as exc:  # noqa: BLE001 - whatever the typed path raises is the Future's outcome
            out.set_exception(exc)

    fut.add_done_callback(settle)
    return out


def typed_list(results: list[Any], errors: dict[str, type[Exception]], kind: type[_T] | None, what: str) -> list[Any]:
    """`call_many(..., return_exceptions=True)`'s results, typed; the first failure (by position) is raised."""
    if kind is None:
        if not any(isinstance(value, BaseException) for value in results):
            return results  # nothing failed and any reply will do: the list as it came
    elif all(type(value) is kind for value in results):
        return results  # each exactly of the expected kind (else `_typed` says which is not, or raises the failure)
    return [_typed(value, errors, kind, what) for value in results]
