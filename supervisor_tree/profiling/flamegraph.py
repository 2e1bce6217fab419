"""Flame graph SVGs from collapsed stacks: the one renderer for every engine.

Owns layout (root at the bottom, children in name order, width = share of the
total), colour, XML escaping and the small inline script that makes the file
interactive, in the manner of flamegraph.pl and inferno: hover for a tooltip, click a
frame to zoom, "Reset Zoom", Ctrl-F / "/" / the "Search" button to highlight frames
matching a regular expression and show their share.  No I/O, no external resources:
the SVG opens from disk in any browser.

    >>> svg = render_svg(parse_collapsed("main;hot 8\\nmain;cool 2\\n"), title="demo")
    >>> svg.startswith("<?xml")
    True

Each file embeds its profile (collapsed text with the meta header) in a
``<metadata id="st-profile">`` element, so ``profile_from_svg`` can read it back and
``supervise profile diff`` works on the SVGs users already have.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field

from supervisor_tree.profiling.collapsed import Profile, ProfileMeta, Unit, format_collapsed, parse_collapsed
from supervisor_tree.profiling.errors import ProfilerError

WIDTH = 1200
SIDE = 10  # px of margin left and right
FRAME_H = 16
PAD_TOP = 76  # title, up to three subtitle lines, buttons
PAD_BOTTOM = 30  # details line
MIN_WIDTH_PX = 0.1  # flamegraph.pl's default: narrower frames are not drawn at all
SEARCH_FILL = "rgb(230,0,230)"
SVG_NS = "http://www.w3.org/2000/svg"


@dataclass(slots=True)
class _Node:
    name: str
    total: float = 0.0
    children: dict[str, _Node] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Frame:
    name: str
    path: tuple[str, ...]  # frames from (not including) the root "all" to this one
    depth: int
    x: float  # left edge, as a fraction of the root's width
    w: float  # width, as a fraction of the root's width
    total: float


def _tree(profile: Profile) -> _Node:
    root = _Node("all")
    for stack, weight in profile.stacks.items():
        root.total += weight
        node = root
        for name in stack.split(";"):
            node = node.children.setdefault(name, _Node(name))
            node.total += weight
    return root


def _layout(root: _Node, min_width_px: float) -> list[_Frame]:
    """Every frame at least ``min_width_px`` wide, parents before children."""
    if root.total <= 0:
        return []
    min_frac = min_width_px / (WIDTH - 2 * SIDE)
    out: list[_Frame] = []
    todo: list[tuple[_Node, tuple[str, ...], int, float]] = [(root, (), 0, 0.0)]
    while todo:  # iterative: Python stacks can be deeper than the recursion limit
        node, path, depth, x = todo.pop()
        w = node.total / root.total
        if w < min_frac:
            continue
        out.append(_Frame(node.name, path, depth, x, w, node.total))
        for child in sorted(node.children.values(), key=lambda n: n.name):
            todo.append((child, path + (child.name,), depth + 1, x))
            x += child.total / root.total  # children from the left, self time on the right
    return out


def _hot_colour(name: str) -> str:
    """A warm colour from a stable hash (not hash(): it changes between runs)."""
    h = zlib.crc32(name.encode("utf-8", "replace"))
    v1, v2, v3 = (h & 0xFF) / 255, ((h >> 8) & 0xFF) / 255, ((h >> 16) & 0xFF) / 255
    return f"rgb({205 + int(50 * v3)},{int(230 * v1)},{int(55 * v2)})"


def _diff_colour(delta: float, biggest: float) -> str:
    """Red for hotter, blue for cooler, white for unchanged; saturation ~ |delta|."""
    if biggest <= 0 or abs(delta) < 1e-12:
        return "rgb(250,250,250)"
    v = int(round(210 * min(1.0, abs(delta) / biggest)))
    return f"rgb(255,{255 - v},{255 - v})" if delta > 0 else f"rgb({255 - v},{255 - v},255)"


_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def escape(text: str, *, quote: bool = True) -> str:
    """Text safe in XML content (and, with ``quote``, in double-quoted attributes)."""
    text = _INVALID_XML.sub("\ufffd", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace('"', "&quot;") if quote else text


def _amount(weight: float, unit: Unit) -> str:
    if unit is Unit.SAMPLES:
        return f"{weight:,.0f} samples"
    if weight < 1e3:
        return f"{weight:.0f} µs"
    return f"{weight / 1e3:,.1f} ms" if weight < 1e6 else f"{weight / 1e6:,.2f} s"


def label(name: str, width_px: float) -> str:
    """The text that fits in a frame ~7 px per character; the script does the same."""
    chars = int((width_px - 6) // 7)
    if chars < 3:
        return ""
    return name if len(name) <= chars else name[: chars - 2] + ".."


def _frame_svg(frame: _Frame, max_depth: int, fill: str, tip: str) -> str:
    x = SIDE + frame.x * (WIDTH - 2 * SIDE)
    w = frame.w * (WIDTH - 2 * SIDE)
    y = PAD_TOP + (max_depth - frame.depth) * FRAME_H
    return (
        f'<g class="f" data-x="{frame.x:.8f}" data-w="{frame.w:.8f}" data-d="{frame.depth}">'
        f"<title>{escape(tip)}</title>"
        f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{FRAME_H - 1}" fill="{fill}" rx="2" ry="2"/>'
        f'<text x="{x + 3:.2f}" y="{y + 11.5}">{escape(label(frame.name, w))}</text></g>'
    )


def render_svg(profile: Profile, *, title: str | None = None,
               min_width_px: float = MIN_WIDTH_PX) -> str:
    """An interactive flame graph of ``profile``; widths are shares of its total."""
    root = _tree(profile)
    frames = _layout(root, min_width_px)
    max_depth = max((f.depth for f in frames), default=0)
    unit = profile.meta.unit
    body = []
    for f in frames:
        share = 100.0 * f.total / root.total
        tip = f"{f.name}\n{_amount(f.total, unit)}, {share:.2f}%"
        body.append(_frame_svg(f, max_depth, _hot_colour(f.name), tip))
    meta = profile.meta
    return _document(
        title=title or _default_title(meta),
        subtitles=[meta.describe()],
        frames=body, max_depth=max_depth,
        comment=meta.describe(),
        metadata={"st-profile": format_collapsed(profile)},
    )


def render_diff_svg(before: Profile, after: Profile, *, title: str | None = None,
                    min_width_px: float = MIN_WIDTH_PX) -> str:
    """A differential flame graph: shape from ``after``, colour from the change.

    Each frame's share of its profile's total is compared along the same path in
    both; red got hotter, blue cooler, the saturation scales with the change relative
    to the biggest change in the graph.  Frames that vanished have no width in
    ``after``: their parent turns blue, and its tooltip shows both shares.
    """
    b_root, a_root = _tree(before), _tree(after)
    frames = _layout(a_root, min_width_px)
    max_depth = max((f.depth for f in frames), default=0)
    shares = {f.path: (_share(b_root, f.path), f.total / a_root.total) for f in frames}
    biggest = max((abs(a - b) for p, (b, a) in shares.items() if p), default=0.0)
    body = []
    for f in frames:
        b, a = shares[f.path]
        tip = f"{f.name}\nbefore {100 * b:.2f}% · after {100 * a:.2f}% ({100 * (a - b):+.2f} points)"
        body.append(_frame_svg(f, max_depth, _diff_colour(a - b, biggest), tip))
    return _document(
        title=title or f"{_default_title(before.meta)} → {_default_title(after.meta)}",
        subtitles=["red: hotter · blue: cooler (share of total) · widths: after",
                   f"before: {before.meta.describe()}", f"after: {after.meta.describe()}"],
        frames=body, max_depth=max_depth,
        comment=f"before: {before.meta.describe()}\nafter: {after.meta.describe()}",
        metadata={"st-before": format_collapsed(before), "st-after": format_collapsed(after)},
    )


def _share(root: _Node, path: tuple[str, ...]) -> float:
    node = root
    for name in path:
        if name not in node.children:
            return 0.0
        node = node.children[name]
    return node.total / root.total if root.total > 0 else 0.0


def _default_title(meta: ProfileMeta) -> str:
    return f"{meta.worker_id or 'profile'} · {meta.engine.value}"


def _document(*, title: str, subtitles: list[str], frames: list[str], max_depth: int,
              comment: str, metadata: dict[str, str]) -> str:
    height = PAD_TOP + (max_depth + 1) * FRAME_H + PAD_BOTTOM
    lines = "".join(
        f'<text class="sub" x="{WIDTH / 2}" y="{40 + 14 * i}">{escape(s)}</text>'
        for i, s in enumerate(subtitles[:3])
    )
    blocks = "".join(f'<metadata id="{k}">{escape(v, quote=False)}</metadata>' for k, v in metadata.items())
    safe_comment = _INVALID_XML.sub("\ufffd", comment).replace("--", "- -")
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
        f'<svg version="1.1" xmlns="{SVG_NS}" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" onload="init(evt)">\n'
        f"<!-- supervisor_tree flame graph\n{safe_comment}\n-->\n{blocks}\n"
        f"<style>{_CSS}</style>\n<script><![CDATA[{_JS}]]></script>\n"
        '<defs><linearGradient id="bg" y1="0" y2="1" x1="0" x2="0">'
        '<stop stop-color="#eeeeee" offset="5%"/><stop stop-color="#eeeeb0" offset="95%"/>'
        "</linearGradient></defs>\n"
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="url(#bg)"/>\n'
        f'<text id="title" x="{WIDTH / 2}" y="22">{escape(title)}</text>{lines}\n'
        f'<text id="unzoom" class="btn hide" x="{SIDE}" y="22">Reset Zoom</text>'
        f'<text id="search" class="btn" x="{WIDTH - SIDE}" y="22">Search</text>'
        f'<text id="matched" x="{WIDTH - SIDE}" y="{height - 10}"> </text>'
        f'<text id="details" x="{SIDE}" y="{height - 10}"> </text>\n'
        '<g id="frames">\n' + "\n".join(frames) + "\n</g>\n</svg>\n"
    )


def profile_from_svg(svg_text: str, which: str = "st-profile") -> Profile:
    """The profile a flame graph of ours embeds (``st-before``/``st-after`` in a diff)."""
    try:
        root = ET.fromstring(svg_text)
    except ET.ParseError as exc:
        raise ProfilerError(f"not a readable SVG file ({exc})") from None
    for element in root.iter(f"{{{SVG_NS}}}metadata"):
        if element.get("id") == which:
            return parse_collapsed(element.text or "")
    raise ProfilerError(
        f"this SVG carries no embedded profile ({which}); it was not written by "
        "supervise profile — diff the .collapsed files instead"
    )


_CSS = (
    "text{font-family:Verdana,sans-serif;font-size:12px;fill:#000}"
    "#title{text-anchor:middle;font-size:17px}.sub{text-anchor:middle;fill:#555;font-size:11px}"
    "#search,#matched{text-anchor:end}.btn{cursor:pointer;fill:#36c}.btn:hover{text-decoration:underline}"
    ".hide{display:none}g.f{cursor:pointer}g.f:hover rect{stroke:#000;stroke-width:.6}"
    "g.f text{pointer-events:none}g.parent{opacity:.55}"
)

# Frames carry their layout as fractions of the root (data-x, data-w) and depth
# (data-d); zoom re-places every frame from those, so no state hides in pixels.
_JS = r"""
var W=%(usable)d,X0=%(side)d,frames=[],term=null,details,matched,searchBtn,unzoomBtn;
function init(evt){
 details=document.getElementById("details");matched=document.getElementById("matched");
 searchBtn=document.getElementById("search");unzoomBtn=document.getElementById("unzoom");
 frames=Array.prototype.slice.call(document.querySelectorAll("g.f"));
 frames.forEach(function(g){
  g.fx=+g.getAttribute("data-x");g.fw=+g.getAttribute("data-w");g.fd=+g.getAttribute("data-d");
  g.rect=g.querySelector("rect");g.label=g.querySelector("text");g.fill=g.rect.getAttribute("fill");
  g.tip=g.querySelector("title").textContent;g.fname=g.tip.split("\n")[0];
  g.addEventListener("click",function(){zoom(g)});
  g.addEventListener("mouseover",function(){details.textContent=g.tip.replace("\n"," · ")});
  g.addEventListener("mouseout",function(){details.textContent=" "});
 });
 searchBtn.addEventListener("click",function(){term===null?ask():search(null)});
 unzoomBtn.addEventListener("click",function(){zoom(null)});
 window.addEventListener("keydown",function(e){
  if(((e.ctrlKey||e.metaKey)&&e.keyCode===70)||(e.key==="/"&&!e.ctrlKey)){e.preventDefault();ask()}
  else if(e.key==="Escape"){search(null);zoom(null)}});
}
function place(g,x,w){
 g.rect.setAttribute("x",x.toFixed(2));g.rect.setAttribute("width",w.toFixed(2));
 g.label.setAttribute("x",(x+3).toFixed(2));var c=Math.floor((w-6)/7),n=g.fname;
 g.label.textContent=c<3?"":(n.length<=c?n:n.substring(0,c-2)+"..");
}
function zoom(z){
 var x0=z?z.fx:0,w0=z?z.fw:1,d0=z?z.fd:0,e=1e-9;
 frames.forEach(function(g){
  var inside=g.fd>=d0&&g.fx>=x0-e&&g.fx+g.fw<=x0+w0+e;
  var above=g.fd<d0&&g.fx<=x0+e&&g.fx+g.fw>=x0+w0-e;
  g.style.display=(inside||above)?"":"none";
  if(above){g.classList.add("parent");place(g,X0,W)}
  else if(inside){g.classList.remove("parent");place(g,X0+(g.fx-x0)/w0*W,g.fw/w0*W)}
 });
 if(z&&z.fd>0){unzoomBtn.classList.remove("hide")}else{unzoomBtn.classList.add("hide")}
}
function ask(){var t=prompt("Search frames (regular expression):",term||"");if(t)search(t)}
function search(t){
 term=t||null;var re=null,spans=[],sum=0,end=-1;
 if(term){try{re=new RegExp(term)}catch(err){re=new RegExp(term.replace(/[.*+?^${}()|[\]\\]/g,"\\$&"))}}
 frames.forEach(function(g){var hit=re!==null&&re.test(g.fname);
  g.rect.setAttribute("fill",hit?"%(search_fill)s":g.fill);if(hit)spans.push([g.fx,g.fx+g.fw])});
 spans.sort(function(a,b){return a[0]-b[0]});
 spans.forEach(function(s){if(s[1]>end){sum+=s[1]-Math.max(s[0],end);end=s[1]}});
 matched.textContent=term?"Matched: "+(100*sum).toFixed(1)+"%%":" ";
 searchBtn.textContent=term?"Reset Search":"Search";
}
""" % {"usable": WIDTH - 2 * SIDE, "side": SIDE, "search_fill": SEARCH_FILL}
