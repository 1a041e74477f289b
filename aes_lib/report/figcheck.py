"""A reader's check of a finished matplotlib figure: is every text readable, does any text sit on
another, does the legend name anything that is not drawn?

``check_figure(fig, dpi)`` draws the figure and returns the problems found, one line each:

- a text whose font is smaller than :data:`MIN_TEXT_PX` pixels at the DPI the figure is saved at
  (a 6 pt label at 100 dpi is 8 px: about 6 px capitals, too small to read);
- two texts whose drawn extents (matplotlib's window extents) overlap by more than
  :data:`OVERLAP_PX` pixels both ways: tick labels printed on top of each other, a value label
  on a title;
- a legend entry whose label names no artist with visible data (a line of only NaN, bars all of
  height 0, an empty collection).

:func:`aes_lib.style.save_figure` runs it on every figure it writes when the environment variable
``AES_FIGURE_CHECK`` is set (``warn``: log each problem; ``strict``: raise), so a whole run can be
checked: ``AES_FIGURE_CHECK=strict aes reproduce --profile smoke``.
"""

from __future__ import annotations

import io
import math
from typing import Any

#: smallest font size, in pixels of the saved image, that counts as readable
MIN_TEXT_PX = 10.0
#: texts may touch; overlapping by more than this many pixels in both directions is a collision
OVERLAP_PX = 1.0


def _tick_labels(fig) -> tuple[set[int], set[int]]:
    """(ids of every tick label, ids of those drawn: visible ticks inside the view limits)."""
    every, drawn = set(), set()
    for ax in fig.axes:
        axes = ax._axis_map.values() if hasattr(ax, "_axis_map") else (ax.xaxis, ax.yaxis)
        for axis in axes:
            for t in axis.get_major_ticks() + axis.get_minor_ticks():
                every |= {id(t.label1), id(t.label2)}
            shown = axis._update_ticks() if hasattr(axis, "_update_ticks") else axis.get_major_ticks()
            for t in shown:
                if t.get_visible():
                    drawn |= {id(t.label1), id(t.label2)}
    return every, drawn


def _texts(fig) -> list[Any]:
    from matplotlib.text import Text

    every, drawn = _tick_labels(fig)
    out = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip():
            continue
        if t.axes is not None and not t.axes.get_visible():
            continue
        if id(t) in every and id(t) not in drawn:
            continue   # the label of a tick that is not drawn
        out.append(t)
    return out


def _rotated_box(t, bb) -> tuple[float, float, float, float, float]:
    """(centre x, centre y, half length, half height, angle) of a text's drawn rectangle: its
    axis-aligned extent is that of the rectangle turned by the text's rotation."""
    theta = math.radians(t.get_rotation() % 180)
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    cx, cy = (bb.x0 + bb.x1) / 2, (bb.y0 + bb.y1) / 2
    det = c * c - s * s
    if abs(det) < 0.2:   # near 45 degrees the rectangle is not recoverable: keep the extent
        return cx, cy, bb.width / 2, bb.height / 2, 0.0
    length = (c * bb.width - s * bb.height) / det
    height = (c * bb.height - s * bb.width) / det
    if length <= 0 or height <= 0:
        return cx, cy, bb.width / 2, bb.height / 2, 0.0
    return cx, cy, length / 2, height / 2, theta


def _overlap(a, b) -> float:
    """How far two rotated rectangles overlap along the axis where they overlap least (pixels;
    0 or less: apart), by the separating-axis test."""
    least = math.inf
    for _, _, _, _, th in (a, b):
        for ux, uy in ((math.cos(th), math.sin(th)), (-math.sin(th), math.cos(th))):
            spans = []
            for cx, cy, hl, hh, tt in (a, b):
                centre = cx * ux + cy * uy
                reach = (hl * abs(math.cos(tt) * ux + math.sin(tt) * uy)
                         + hh * abs(-math.sin(tt) * ux + math.cos(tt) * uy))
                spans.append((centre - reach, centre + reach))
            least = min(least, min(spans[0][1], spans[1][1]) - max(spans[0][0], spans[1][0]))
    return least


def _name(t) -> str:
    text = t.get_text().replace("\n", " ")
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _has_data(artist) -> bool:
    import numpy as np
    from matplotlib.collections import Collection
    from matplotlib.container import Container
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    if isinstance(artist, Container):
        return any(_has_data(a) for a in artist if a is not None and hasattr(a, "get_visible"))
    if not artist.get_visible():
        return False
    if isinstance(artist, Line2D):
        x, y = (np.asarray(v, dtype=float) for v in artist.get_data())
        return bool(np.isfinite(x).any() and np.isfinite(y).any()) if len(x) and len(y) else False
    if isinstance(artist, Rectangle):
        return bool(artist.get_width() and artist.get_height()
                    and math.isfinite(artist.get_width()) and math.isfinite(artist.get_height()))
    if isinstance(artist, Collection):
        return len(artist.get_offsets()) > 0 or len(artist.get_paths()) > 0
    return True


def _labelled_artists(fig) -> dict[str, list[Any]]:
    from matplotlib.artist import Artist

    out: dict[str, list[Any]] = {}
    for ax in fig.axes:
        for a in [*ax.lines, *ax.patches, *ax.collections, *ax.containers, *ax.images]:
            label = a.get_label() if isinstance(a, Artist) or hasattr(a, "get_label") else None
            if label and not str(label).startswith("_"):
                out.setdefault(str(label), []).append(a)
    return out


def _legends(fig) -> list[Any]:
    legends = list(fig.legends)
    legends += [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [lg for lg in legends if lg.get_visible()]


def _text_problems(fig, renderer, dpi: float) -> list[str]:
    problems = []
    texts = _texts(fig)
    for t in texts:
        px = t.get_fontsize() * dpi / 72.0
        if px < MIN_TEXT_PX - 1e-6:
            problems.append(f"text {_name(t)} is {t.get_fontsize():g} pt = {px:.1f} px at {dpi:g} dpi "
                            f"(readable: {MIN_TEXT_PX:g} px or more)")
    boxes = []
    for t in texts:
        try:
            bb = t.get_window_extent(renderer)
        except (RuntimeError, ValueError):
            continue
        if bb.width > 0 and bb.height > 0 and all(map(math.isfinite, (bb.x0, bb.y0, bb.x1, bb.y1))):
            boxes.append((t, bb, _rotated_box(t, bb)))
    for i, (a, ba, ra) in enumerate(boxes):
        for b, bb, rb in boxes[i + 1:]:
            w = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
            h = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
            if w <= OVERLAP_PX or h <= OVERLAP_PX:
                continue
            depth = _overlap(ra, rb)
            if depth > OVERLAP_PX:
                problems.append(f"texts {_name(a)} and {_name(b)} overlap (by {depth:.0f} px)")
    return problems


def check_figure(fig, dpi: float | None = None) -> list[str]:
    """The problems a reader would meet in ``fig`` saved at ``dpi`` (default: the savefig DPI)."""
    import matplotlib as mpl

    if dpi is None or dpi == "figure":
        dpi = mpl.rcParams["savefig.dpi"]
        dpi = fig.dpi if dpi == "figure" else float(dpi)
    problems: list[str] = []
    # read the texts where the saved image has them: in the last draw of a real save (constrained
    # layout, tight bounding box and all), through the figure's draw event
    seen: list[list[str]] = []
    cid = fig.canvas.mpl_connect("draw_event", lambda ev: seen.append(_text_problems(fig, ev.renderer, dpi)))
    try:
        fig.savefig(io.BytesIO(), format="png", dpi=dpi)
    finally:
        fig.canvas.mpl_disconnect(cid)
    problems += seen[-1] if seen else ["the figure could not be drawn"]
    drawn = _labelled_artists(fig)
    for lg in _legends(fig):
        for t in lg.get_texts():
            label = t.get_text()
            if not any(_has_data(a) for a in drawn.get(label, [])):
                problems.append(f"legend entry {label!r} has no data drawn")
    return problems
