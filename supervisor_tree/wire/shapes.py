"""Shapes: what a decoded message must look like before anyone acts on it.

Owns `BadFrame` (the one error every receive path raises or records for a frame it
will not act on) and `check_message`, the small schema check of the tuples that cross
the node's sockets and the fork server's pipe: a kind, then fields of given types.
Each receiver declares its own table of kinds beside its protocol, e.g.

    NOTICES = {"ready": (str, int, int), "hb": (str, int, int, dict)}
    check_message(("ready", "db", 2, 4121), NOTICES, "notice")       # -> the tuple
    check_message(("ready", "db"), NOTICES, "notice")
    # BadFrame: notice "ready" takes 3 fields (str, int, int); got 1

A bool is not an int here (True is not a pid).  Imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["BadFrame", "Fields", "check_message", "describe", "is_a"]

Fields = tuple[type | tuple[type, ...], ...]

UNAUTHENTICATED, MALFORMED = "unauthenticated", "malformed"


class BadFrame(ValueError):
    """A frame a receiver will not act on.  `kind`: "unauthenticated" (no valid tag: never decoded)
    or "malformed" (authentic, but not of the shape the socket takes); `reason`: one line."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def is_a(value: object, expected: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool) and not (expected is bool or (isinstance(expected, tuple) and bool in expected)):
        return False
    return isinstance(value, expected)


def describe(value: object, limit: int = 40) -> str:
    """`int 3`, `list [1, 2]`, `bytes of 4000 bytes`: a value in an error message, bounded in length."""
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > limit:
        return f"{type(value).__name__} of {len(value)} bytes"
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def _names(fields: Fields) -> str:
    return ", ".join(f.__name__ if isinstance(f, type) else "|".join(t.__name__ for t in f) for f in fields)


def check_message(msg: object, kinds: Mapping[str, Fields], what: str, *, open_kinds: bool = False) -> tuple[object, ...]:
    """`msg` when it is a tuple (kind, *fields) of a kind in `kinds` with fields of the listed types.

    `open_kinds`: a kind not in the table passes unchecked (someone else, e.g. a node
    extension, takes it); still a tuple that starts with a str.  Raises BadFrame.
    """
    if not isinstance(msg, tuple) or not msg or not isinstance(msg[0], str):
        raise BadFrame(MALFORMED, f"a {what} must be a tuple starting with its kind (a str); got {describe(msg)}")
    kind = msg[0]
    fields = kinds.get(kind)
    if fields is None:
        if open_kinds:
            return msg
        raise BadFrame(MALFORMED, f"unknown {what} kind {kind[:40]!r}; expected one of {', '.join(kinds)}")
    if len(msg) - 1 != len(fields):
        raise BadFrame(MALFORMED, f"{what} {kind!r} takes {len(fields)} field(s) ({_names(fields)}); got {len(msg) - 1}")
    for i, (value, expected) in enumerate(zip(msg[1:], fields), start=1):
        if not is_a(value, expected):
            raise BadFrame(MALFORMED, f"{what} {kind!r}: field {i} must be {_names((expected,))}; got {describe(value)}")
    return msg
