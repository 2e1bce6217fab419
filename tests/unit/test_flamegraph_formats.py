"""What the renderer reads and what else a profile becomes: collapsed text with its
meta, merging workers, top frames, speedscope JSON, options, and files on disk."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from supervisor_tree.profiling import (
    CaptureOptions,
    Clock,
    Engine,
    Format,
    Profile,
    ProfileMeta,
    ProfilerError,
    Unit,
    diff,
    format_collapsed,
    load,
    merge,
    parse_collapsed,
    subtree_share,
    to_speedscope,
    top_frames,
    write,
)
from supervisor_tree.profiling.speedscope import SCHEMA

META = ProfileMeta(
    engine=Engine.PYSPY, worker_id="counter", pid=4136, generation=3, duration_s=2.0,
    samples=200, started_at="2026-11-26T13:19:47+00:00", rate_hz=100,
    extra={"errors": 0, "note": "a b 12"},
)
PYSPY_RAW = """\
<module> (w.py:1);cool_spin (w.py:5) 18
<module> (w.py:1);hot_spin (w.py:2) 81
Thread._bootstrap (threading.py:988);Thread.run (threading.py:971);sleeper (w.py:8) 6
<module> (w.py:1);hot_spin (w.py:2) 1
 1
"""
# flamegraph.pl's own line pattern: a header line matching it would become a frame.
FLAMEGRAPH_PL_LINE = re.compile(r"^(.*)\s+?(\d+(?:\.\d*)?)$")


def test_collapsed_round_trip_keeps_stacks_and_meta() -> None:
    original = Profile({"a;b;c": 3, "a;d": 1.5, "x y;z (f.py:9)": 2}, META)
    text = format_collapsed(original)
    back = parse_collapsed(text)
    assert back.stacks == original.stacks
    assert back.meta == original.meta
    assert text.splitlines()[0] == "# supervisor_tree profile"


def test_header_lines_are_skipped_by_other_tools() -> None:
    text = format_collapsed(Profile({"a;b": 3}, META))
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert len(header) == 12
    assert not [line for line in header if FLAMEGRAPH_PL_LINE.match(line)]


def test_plain_collapsed_files_from_other_tools_parse() -> None:
    p = parse_collapsed(PYSPY_RAW)
    assert p.stacks["<module> (w.py:1);hot_spin (w.py:2)"] == 82  # repeated stacks add up
    assert len(p.stacks) == 3  # py-spy's empty " 1" stack is dropped
    assert p.meta.engine is Engine.EXTERNAL and p.meta.samples == 106
    garbage = parse_collapsed("not a stack line\n# title: x\nmain;f 2.5\n\n")
    assert garbage.stacks == {"main;f": 2.5}


def test_a_bad_header_value_names_the_key() -> None:
    with pytest.raises(ProfilerError, match="engine='perf'"):
        parse_collapsed('# engine="perf"\na;b 1\n')
    with pytest.raises(ProfilerError, match="pid="):
        parse_collapsed('# pid="many"\na;b 1\n')


def test_profile_rejects_empty_stacks_and_non_positive_weights() -> None:
    with pytest.raises(ProfilerError):
        Profile({"": 1}, META)
    with pytest.raises(ProfilerError):
        Profile({"a": 0}, META)


def test_merge_puts_the_worker_id_at_the_root() -> None:
    a = Profile({"main;hot": 8, "main;cool": 2}, META)
    b = Profile({"main;hot": 1}, ProfileMeta(Engine.PYSPY, "b", 7, 1, 3.0, 50, "2026-11-26T13:00:00+00:00", 100))
    merged = merge({"alpha": a, "beta": b})
    assert merged.stacks == {"alpha;main;hot": 8, "alpha;main;cool": 2, "beta;main;hot": 1}
    m = merged.meta
    assert (m.worker_id, m.engine, m.samples, m.duration_s, m.rate_hz) == ("all", Engine.PYSPY, 250, 3.0, 100)
    assert m.started_at == "2026-11-26T13:00:00+00:00"
    assert m.extra == {"workers": ["alpha", "beta"]}
    assert subtree_share(merged, "hot", under="alpha") == pytest.approx(8 / 11)


def test_merge_refuses_mixed_units() -> None:
    yappi = ProfileMeta(Engine.YAPPI, "y", 1, 1, 1.0, 5, "", unit=Unit.MICROSECONDS)
    with pytest.raises(ProfilerError, match="different units"):
        merge({"a": Profile({"m": 1}, META), "y": Profile({"m": 1}, yappi)})
    with pytest.raises(ProfilerError, match="nothing to merge"):
        merge({})


def test_top_frames_rank_by_self_time_and_count_recursion_once() -> None:
    p = Profile({"main;f;f;hot": 60, "main;f;cool": 30, "main;f": 10}, META)
    rows = top_frames(p, 3)
    assert rows[0] == ("hot", 60.0, 60.0)
    assert rows[1] == ("cool", 30.0, 30.0)
    assert rows[2] == ("f", 10.0, 100.0)  # f appears twice in one stack: counted once
    assert top_frames(Profile({}, META)) == []


def test_subtree_share() -> None:
    p = Profile({"main;work;hot": 6, "main;hot": 2, "main;cool": 2}, META)
    assert subtree_share(p, "hot") == pytest.approx(0.8)
    assert subtree_share(p, "hot", under="work") == pytest.approx(0.6)
    assert subtree_share(p, "hot", under="nowhere") == 0.0


def test_speedscope_document_follows_the_sampled_schema() -> None:
    p = Profile(parse_collapsed(PYSPY_RAW).stacks, META)
    doc = json.loads(json.dumps(to_speedscope(p)))
    assert doc["$schema"] == SCHEMA
    frames = doc["shared"]["frames"]
    assert {"name": "hot_spin", "file": "w.py", "line": 2} in frames
    assert all(isinstance(f["name"], str) for f in frames)
    (prof,) = doc["profiles"]
    assert prof["type"] == "sampled" and prof["unit"] == "none"
    assert len(prof["samples"]) == len(prof["weights"]) == len(p.stacks)
    assert all(0 <= i < len(frames) for sample in prof["samples"] for i in sample)
    assert prof["startValue"] == 0 and prof["endValue"] == sum(prof["weights"]) == p.total
    stacks = {";".join(_frame_name(frames[i]) for i in s): w for s, w in zip(prof["samples"], prof["weights"])}
    assert stacks == p.stacks  # root first, same weights
    assert "worker counter" in doc["name"] and doc["activeProfileIndex"] == 0


def _frame_name(frame: dict[str, object]) -> str:
    return f"{frame['name']} ({frame['file']}:{frame['line']})" if "file" in frame else str(frame["name"])


def test_speedscope_unit_for_yappi_is_microseconds() -> None:
    meta = ProfileMeta(Engine.YAPPI, "w", 1, 1, 1.0, 5, "", clock=Clock.WALL, unit=Unit.MICROSECONDS)
    assert to_speedscope(Profile({"a": 5}, meta))["profiles"][0]["unit"] == "microseconds"  # type: ignore[index]


def test_options_report_every_problem_at_once() -> None:
    with pytest.raises(ProfilerError) as info:
        CaptureOptions(engine=Engine.YAPPI, duration_s=0, rate_hz=0, native=True, gil=True)
    message = str(info.value)
    for part in ("duration must be > 0", "rate must be 1..", "--native is a py-spy option", "--gil"):
        assert part in message
    with pytest.raises(ProfilerError, match="engine must be py-spy or yappi; got 'perf'"):
        CaptureOptions.from_strings(engine="perf")
    assert CaptureOptions.from_strings(engine="yappi", clock="cpu").clock is Clock.CPU


def test_write_names_files_by_worker_engine_and_time_and_never_overwrites(tmp_path: Path) -> None:
    p = Profile({"main;hot": 8, "main;cool": 2}, META)
    first = write(p, Format.SVG, None, str(tmp_path / "profiles"))
    second = write(p, Format.SVG, None, str(tmp_path / "profiles"))
    assert Path(first).name == "counter-py-spy-20261126-131947.svg"
    assert Path(second).name == "counter-py-spy-20261126-131947-2.svg"
    into_dir = write(p, Format.SPEEDSCOPE, str(tmp_path), "unused")
    assert into_dir.endswith(".speedscope.json") and json.loads(Path(into_dir).read_text())["$schema"] == SCHEMA
    named = write(p, Format.COLLAPSED, str(tmp_path / "x" / "mine.txt"), "unused")
    assert load(named).stacks == p.stacks and load(named).meta == META
    assert load(first).stacks == p.stacks


def test_pstats_and_callgrind_need_the_yappi_engine(tmp_path: Path) -> None:
    p = Profile({"main;hot": 8}, META)
    for fmt in (Format.PSTATS, Format.CALLGRIND):
        with pytest.raises(ProfilerError, match="need --engine yappi"):
            write(p, fmt, None, str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_diff_of_two_written_files(tmp_path: Path) -> None:
    before = write(Profile({"main;a": 1, "main;b": 3}, META), Format.SVG, None, str(tmp_path))
    after = write(Profile({"main;a": 3, "main;b": 1}, META), Format.COLLAPSED, None, str(tmp_path))
    out = diff(before, after, None, str(tmp_path))
    assert Path(out).name == "diff-counter-py-spy-20261126-131947-vs-counter-py-spy-20261126-131947.svg"
    assert "st-before" in Path(out).read_text()
    with pytest.raises(ProfilerError, match="cannot read"):
        diff(str(tmp_path / "missing.svg"), after)
