"""Tools of a config's own for the inline tests (imported by the network worker and the pool members
as tests.integration.inline_tools)."""

from __future__ import annotations

import os
import time


def shout(text: str) -> str:
    """Cheap: upper-cased text, and the pid that ran it (the network worker's when inline)."""
    return f"{text.upper()} from {os.getpid()}"


def boom(text: str) -> str:
    raise ValueError(f"no {text!r} today")


def quit_(text: str) -> str:
    raise SystemExit(3)


def slow(ms: int) -> str:
    """Not cheap at all: a tool wrongly marked inline."""
    time.sleep(ms / 1000)
    return f"slept {ms} ms in {os.getpid()}"


def odd(text: str) -> object:
    """Returns what JSON cannot carry (pickle can: the pool brings it back)."""
    return {text}
