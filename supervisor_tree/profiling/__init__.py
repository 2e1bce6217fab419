"""Profiling workers: flame graphs of one worker, or of all, without touching their code.

Two engines, one output path.  py-spy samples a worker from outside by pid (works on
a worker stuck in a loop or blocked); yappi runs inside the worker, started and
stopped over its control channel.  Both give a ``Profile`` (collapsed stacks plus
self-describing meta) that one renderer turns into an interactive SVG, and that also
writes as speedscope JSON or collapsed text; yappi adds pstats and callgrind files.

    >>> from supervisor_tree.profiling import Target, CaptureOptions, capture, write, Format
    >>> profile = capture(Target("counter", 4136, 3), CaptureOptions(duration_s=2))  # doctest: +SKIP
    >>> write(profile, Format.SVG, None, "profiles")                                   # doctest: +SKIP

Modules: ``collapsed`` (the record and text format), ``flamegraph`` (SVG),
``speedscope``, ``pyspy`` and ``yappi_engine`` (the engines; the latter runs in the
worker and is imported lazily there, never from here), ``capture`` (orchestration and
files), ``options``, ``report`` (rich tables for the CLI), ``errors``.
"""

from supervisor_tree.profiling.capture import (
    AllProfiles,
    Control,
    Format,
    Target,
    capture,
    capture_all,
    default_path,
    diff,
    load,
    write,
)
from supervisor_tree.profiling.collapsed import (
    Clock,
    Engine,
    Profile,
    ProfileMeta,
    Unit,
    format_collapsed,
    merge,
    parse_collapsed,
    subtree_share,
    top_frames,
)
from supervisor_tree.profiling.errors import ProfilerError
from supervisor_tree.profiling.exited import WorkerExited
from supervisor_tree.profiling.flamegraph import render_diff_svg, render_svg
from supervisor_tree.profiling.options import CaptureOptions
from supervisor_tree.profiling.speedscope import to_speedscope

__all__ = [
    "AllProfiles", "CaptureOptions", "Clock", "Control", "Engine", "Format", "Profile",
    "ProfileMeta", "ProfilerError", "Target", "Unit", "WorkerExited", "capture", "capture_all",
    "default_path", "diff", "format_collapsed", "load", "merge", "parse_collapsed",
    "render_diff_svg", "render_svg", "subtree_share", "to_speedscope", "top_frames", "write",
]
