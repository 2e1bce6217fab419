"""Speedscope's file format (https://www.speedscope.app/file-format-schema.json).

Owns the conversion of a ``Profile`` into one "sampled" profile: a shared frame
table, one sample (frame indices, root first) per distinct collapsed stack, and its
weight.  Frames named ``func (file:line)`` (py-spy's and our yappi engine's style)
keep their file and line.  The file's ``name`` carries the meta line, so the file
describes itself in speedscope's title bar.

    >>> from supervisor_tree.profiling.collapsed import parse_collapsed
    >>> doc = to_speedscope(parse_collapsed("main;hot 8\\n"))
    >>> doc["profiles"][0]["type"], doc["shared"]["frames"][1]["name"]
    ('sampled', 'hot')
"""

from __future__ import annotations

import re

from supervisor_tree.profiling.collapsed import Profile, Unit

SCHEMA = "https://www.speedscope.app/file-format-schema.json"
EXPORTER = "supervisor_tree.profiling"
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def frame_record(frame: str) -> dict[str, object]:
    """Speedscope's Frame for one collapsed frame name."""
    match = _FRAME.match(frame)
    if match is None:
        return {"name": frame}
    return {"name": match["name"], "file": match["file"], "line": int(match["line"])}


def to_speedscope(profile: Profile) -> dict[str, object]:
    """The speedscope document (a JSON-able dict) for ``profile``."""
    index: dict[str, int] = {}
    frames: list[dict[str, object]] = []
    samples: list[list[int]] = []
    weights: list[float] = []
    for stack, weight in sorted(profile.stacks.items()):
        sample = []
        for frame in stack.split(";"):
            if frame not in index:
                index[frame] = len(frames)
                frames.append(frame_record(frame))
            sample.append(index[frame])
        samples.append(sample)
        weights.append(weight)
    description = profile.meta.describe()
    return {
        "$schema": SCHEMA,
        "shared": {"frames": frames},
        "profiles": [{
            "type": "sampled",
            "name": description,
            "unit": "none" if profile.meta.unit is Unit.SAMPLES else "microseconds",
            "startValue": 0,
            "endValue": profile.total,
            "samples": samples,
            "weights": weights,
        }],
        "name": description,
        "activeProfileIndex": 0,
        "exporter": EXPORTER,
    }
