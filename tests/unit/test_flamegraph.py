"""The flame graph renderer: layout, pruning, escaping, search script, meta, diff colours."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest

from supervisor_tree.profiling.collapsed import Engine, Profile, ProfileMeta, Unit
from supervisor_tree.profiling.errors import ProfilerError
from supervisor_tree.profiling.flamegraph import (
    SIDE,
    WIDTH,
    label,
    profile_from_svg,
    render_diff_svg,
    render_svg,
)

NS = {"svg": "http://www.w3.org/2000/svg"}
USABLE = WIDTH - 2 * SIDE

META = ProfileMeta(
    engine=Engine.PYSPY, worker_id="counter", pid=4136, generation=3, duration_s=2.0,
    samples=200, started_at="2026-11-26T13:19:47+00:00", rate_hz=100, extra={"errors": 0},
)


def profile(stacks: dict[str, float], meta: ProfileMeta = META) -> Profile:
    return Profile(stacks, meta)


@dataclass(frozen=True)
class Rect:
    x: float
    width: float
    y: float
    fill: str
    tip: str


def frames(svg: str) -> dict[str, Rect]:
    """Frame name -> its rect's geometry, fill and tooltip, read back from the XML."""
    root = ET.fromstring(svg)
    out = {}
    for g in root.iterfind(".//svg:g[@class='f']", NS):
        title, rect = g.find("svg:title", NS), g.find("svg:rect", NS)
        assert title is not None and rect is not None
        tip = title.text or ""
        out[tip.split("\n")[0]] = Rect(
            float(rect.get("x", "nan")), float(rect.get("width", "nan")),
            float(rect.get("y", "nan")), rect.get("fill", ""), tip,
        )
    return out


def rgb(fill: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"rgb\((\d+),(\d+),(\d+)\)", fill)
    assert match, fill
    r, g, b = (int(v) for v in match.groups())
    return r, g, b


STACKS = {
    "main;work;hot_spin": 60.0,
    "main;work;cool_spin": 20.0,
    "main;idle": 19.0,
    "main;work": 0.98,
    "main;tiny": 0.02,  # 0.02% of 1180 px = 0.24 px: drawn; pruned at min_width_px=1
}


def test_svg_is_xml_with_one_rect_per_frame_above_the_pruning_width() -> None:
    svg = render_svg(profile(STACKS), min_width_px=1.0)
    drawn = frames(svg)
    assert set(drawn) == {"all", "main", "work", "hot_spin", "cool_spin", "idle"}
    assert "tiny" in frames(render_svg(profile(STACKS)))  # the default keeps it (0.1 px)


def test_widths_are_proportional_to_weights_and_children_start_at_their_parent() -> None:
    drawn = frames(render_svg(profile(STACKS)))
    total = sum(STACKS.values())
    for name, weight in (("hot_spin", 60.0), ("cool_spin", 20.0), ("idle", 19.0), ("all", total)):
        assert drawn[name].width == pytest.approx(USABLE * weight / total, abs=0.02)
    assert drawn["work"].width == pytest.approx(USABLE * 80.98 / total, abs=0.02)
    # Children in name order from their parent's left edge: cool_spin, then hot_spin.
    assert drawn["cool_spin"].x == pytest.approx(drawn["work"].x, abs=0.01)
    assert drawn["hot_spin"].x == pytest.approx(drawn["cool_spin"].x + drawn["cool_spin"].width, abs=0.02)
    # Root at the bottom: deeper frames sit higher.
    assert drawn["all"].y > drawn["main"].y > drawn["work"].y > drawn["hot_spin"].y


def test_tooltips_give_amount_and_share() -> None:
    drawn = frames(render_svg(profile({"a;b": 75, "a;c": 25})))
    assert drawn["b"].tip == "b\n75 samples, 75.00%"
    micro = profile({"a;b": 1500}, ProfileMeta(Engine.YAPPI, "w", 1, 1, 1.0, 10, "", unit=Unit.MICROSECONDS))
    assert frames(render_svg(micro))["b"].tip == "b\n1.5 ms, 100.00%"


def test_search_zoom_and_reset_are_in_the_inline_script() -> None:
    svg = render_svg(profile(STACKS))
    script = ET.fromstring(svg).find("svg:script", NS)
    assert script is not None and script.text
    for needle in ("function search(", "function zoom(", "e.keyCode===70", "Matched: ", 'getElementById("unzoom")'):
        assert needle in script.text
    root = ET.fromstring(svg)
    buttons = {t.get("id"): t.text for t in root.iterfind("svg:text", NS) if t.get("id")}
    assert buttons["search"] == "Search" and buttons["unzoom"] == "Reset Zoom"
    assert 'onload="init(evt)"' in svg
    assert "http" not in script.text  # nothing fetched: the file works offline


def test_frame_names_are_escaped() -> None:
    nasty = 'render<T> & "quoted" --> ]]>'
    svg = render_svg(profile({f"main;{nasty}": 5, "main;ok": 5}), title="<b>")
    drawn = frames(svg)  # parses: the escaping held
    assert nasty in drawn
    assert ET.fromstring(svg).find("svg:text[@id='title']", NS).text == "<b>"  # type: ignore[union-attr]


def test_meta_is_shown_and_embedded_and_reads_back() -> None:
    svg = render_svg(profile(STACKS))
    root = ET.fromstring(svg)
    subtitle = " ".join(t.text or "" for t in root.iterfind("svg:text[@class='sub']", NS))
    for fact in ("py-spy", "worker counter", "pid 4136", "generation 3", "2.0 s", "200 samples", "2026-11-26T13:19:47"):
        assert fact in subtitle
    assert "<!-- supervisor_tree flame graph" in svg and "pid 4136" in svg.split("-->")[0]
    back = profile_from_svg(svg)
    assert back.meta == META
    assert back.stacks == pytest.approx(STACKS)


def test_an_svg_from_elsewhere_has_no_profile_to_read_back() -> None:
    with pytest.raises(ProfilerError, match="no embedded profile"):
        profile_from_svg('<svg xmlns="http://www.w3.org/2000/svg"></svg>')


def test_colours_are_warm_and_stable_per_name() -> None:
    first = frames(render_svg(profile(STACKS)))
    again = frames(render_svg(profile({"other;hot_spin": 1, "x;cool_spin": 3})))
    assert first["hot_spin"].fill == again["hot_spin"].fill
    for frame in first.values():
        r, g, b = rgb(frame.fill)
        assert r >= 205 and b <= 55


def test_labels_are_cut_to_fit() -> None:
    assert label("hot_spin (app.py:2)", 1000) == "hot_spin (app.py:2)"
    assert label("hot_spin (app.py:2)", 60) == "hot_s.."  # (60 - 6) // 7 = 7 characters
    assert label("hot_spin", 20) == ""


def test_a_very_deep_stack_renders() -> None:
    deep = ";".join(f"f{i}" for i in range(3000))
    svg = render_svg(profile({deep: 1}))
    assert len(frames(svg)) == 3001


def test_an_empty_profile_renders_an_empty_graph() -> None:
    assert frames(render_svg(profile({}))) == {}


# ------------------------------------------------------------------------ diff

BEFORE = {"main;a": 25.0, "main;b": 50.0, "main;c": 25.0}
AFTER = {"main;a": 100.0, "main;b": 100.0}  # a: 25% -> 50%; b: 50% -> 50%; c: gone


def test_diff_widths_come_from_after() -> None:
    drawn = frames(render_diff_svg(profile(BEFORE), profile(AFTER)))
    assert set(drawn) == {"all", "main", "a", "b"}
    assert drawn["a"].width == pytest.approx(USABLE / 2, abs=0.02)


def test_diff_colours_hotter_red_cooler_blue_unchanged_white() -> None:
    before = {"main;a": 25.0, "main;b": 50.0, "main;c": 25.0}
    after = {"main;a": 50.0, "main;b": 50.0, "main;c": 10.0}  # a doubles, c cools, b ~ same
    drawn = frames(render_diff_svg(profile(before), profile(after)))
    r, g, b = rgb(drawn["a"].fill)
    assert r == 255 and g == b < 200  # red, strong
    r, g, b = rgb(drawn["c"].fill)
    assert b == 255 and r == g < 255  # blue
    assert rgb(drawn["all"].fill) == (250, 250, 250)


def test_diff_intensity_grows_with_the_change() -> None:
    before = {"x;small": 40.0, "x;big": 10.0, "x;rest": 50.0}
    after = {"x;small": 44.0, "x;big": 30.0, "x;rest": 26.0}
    drawn = frames(render_diff_svg(profile(before), profile(after)))
    assert rgb(drawn["big"].fill)[1] < rgb(drawn["small"].fill)[1] < 255  # redder = less green


def test_diff_tooltip_shows_both_shares_and_a_vanished_child_cools_its_parent() -> None:
    before = {"main;a": 50.0, "main;gone;leaf": 50.0}
    after = {"main;a": 60.0, "other": 40.0}
    drawn = frames(render_diff_svg(profile(before), profile(after)))
    assert drawn["main"].tip == "main\nbefore 100.00% · after 60.00% (-40.00 points)"
    assert rgb(drawn["main"].fill)[2] == 255  # blue: it lost the vanished subtree
    assert rgb(drawn["other"].fill)[0] == 255  # new: red
    assert "gone" not in drawn


def test_diff_embeds_both_profiles() -> None:
    svg = render_diff_svg(profile(BEFORE), profile(AFTER))
    assert profile_from_svg(svg, "st-before").stacks == pytest.approx(BEFORE)
    assert profile_from_svg(svg, "st-after").stacks == pytest.approx(AFTER)
