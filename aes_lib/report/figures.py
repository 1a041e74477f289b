"""Figure functions: plain data in, a matplotlib ``Figure`` out; ``save_figure`` writes PDF+PNG.

Each function takes dicts/lists/DataFrames (never file paths), so it is tested on small fixed
inputs. Figures are built with ``matplotlib.figure.Figure`` (no pyplot state) in the project
style, and saved with the metadata that would change between runs removed, so the same inputs
give byte-identical files.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from aes_lib.schema import ATTRIBUTE_LABELS, ATTRIBUTES, DEGRADATIONS, GRADES, INSTRUCTION_TYPES, QTYPES

from aes_lib.style import FIGURE_FORMATS  # noqa: F401  (re-exported: build.py lists the formats)
from aes_lib.style import model_color, readable

MEASURED = "measured by this run"


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs):
    from matplotlib.figure import Figure

    from aes_lib.style import apply_style

    apply_style()
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _provenance(fig, text: str) -> None:
    """A small grey line under the figure saying where its numbers come from."""
    fig.supxlabel(text, fontsize=7, color="#555555", x=0.0, ha="left")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _who(annotator_kind: str) -> str:
    kind = annotator_kind or "unknown"
    return f"{kind} annotators, {MEASURED}"


def save_figure(fig, folder: str | Path, name: str) -> list[Path]:
    """Write ``<folder>/<name>.pdf`` and ``.png`` with deterministic bytes; return the paths."""
    from aes_lib.style import save_figure as _save

    return _save(fig, Path(folder) / name)


def _ordered(keys, preferred: Sequence[str]) -> list[str]:
    """Known keys in their canonical order, then any others sorted."""
    keys = list(keys)
    return [k for k in preferred if k in keys] + sorted(k for k in keys if k not in preferred)


def wrap_label(text: str, width: int = 14) -> str:
    """``text`` on lines of about ``width`` characters, broken only after a hyphen or at a space
    (never inside a word)."""
    parts = [p for p in re.split(r"(?<=-)|(?<= )", text) if p]
    lines, line = [], ""
    for p in parts:
        if line and len((line + p).rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += p
    return "\n".join(lines + [line.rstrip()]) if line else "\n".join(lines)


def _barh(ax, labels: Sequence[str], values: Sequence[float], color: str, fmt: str = "{:g}") -> None:
    ypos = list(range(len(labels)))
    bars = ax.barh(ypos, values, color=color)
    ax.set_yticks(ypos, [readable(label) for label in labels])
    ax.invert_yaxis()
    ax.bar_label(bars, [fmt.format(v) for v in values], padding=2, fontsize=7)
    ax.margins(x=0.15)


# --- dataset -----------------------------------------------------------------------------

def fig_dataset_composition(images: Sequence[Mapping[str, Any]]):
    """Source photos per source package (stacked by split), images per degradation and per
    category. Photos are counted per package, not listed one by one: 69 photo names do not fit
    one readable panel, and each photo has about the same number of images anyway."""
    from aes_lib.schema import SPLITS
    from aes_lib.style import MEASURED_COLORS

    fig, axes = _figure(10, 3.6, 1, 3)
    photo_split = {im["source_photo"]: im["split"] for im in images}
    photo_package = {im["source_photo"]: im.get("source_package") or "unknown package" for im in images}
    packages = sorted(set(photo_package.values()), key=lambda p: (-sum(v == p for v in photo_package.values()), p))
    left = [0] * len(packages)
    ax = axes[0, 0]
    for split, color in zip(SPLITS, MEASURED_COLORS[1:] + MEASURED_COLORS[:1]):
        counts = Counter(photo_package[ph] for ph, sp in photo_split.items() if sp == split)
        widths = [counts.get(p, 0) for p in packages]
        ax.barh(range(len(packages)), widths, left=left, color=color,
                label=split if any(widths) else "_empty")   # an empty split gets no legend entry
        left = [a + b for a, b in zip(left, widths)]
    for y, total in enumerate(left):
        ax.annotate(f"{total}", (total, y), xytext=(2, 0), textcoords="offset points", va="center",
                    fontsize=7)
    ax.set_yticks(range(len(packages)), [readable(p) for p in packages])
    ax.invert_yaxis()
    ax.margins(x=0.15)
    ax.set_xlabel("source photos")
    ax.set_title("source photos per package")
    if images:   # a manifest without images has no split to name
        ax.legend(title="split", fontsize=7, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    deg = Counter(im.get("degradation", "none") for im in images)
    labels = _ordered(deg, DEGRADATIONS)
    _barh(axes[0, 1], labels, [deg[k] for k in labels], MEASURED_COLORS[1])
    axes[0, 1].set_title("per degradation")
    axes[0, 1].set_xlabel("images")
    cat = Counter(im.get("category") or "(none)" for im in images)
    labels = sorted(cat)
    _barh(axes[0, 2], labels, [cat[k] for k in labels], MEASURED_COLORS[2])
    axes[0, 2].set_title("per category")
    axes[0, 2].set_xlabel("images")
    fig.suptitle(f"Dataset composition: {len(images)} images from {len(photo_split)} source photos")
    _provenance(fig, f"Counts {MEASURED} from data/manifest.json.")
    return fig


# --- critiques ---------------------------------------------------------------------------

def fig_critique_grades(grade_counts: Mapping[str, int], annotator_kind: str,
                        consensus_counts: Mapping[str, int] | None = None):
    """Critiques per overall grade and, when given, images per consensus grade."""
    from aes_lib.style import MEASURED_COLORS

    panels = [("critiques per grade", grade_counts, "critiques")]
    if consensus_counts is not None:
        panels.append(("images per consensus grade", consensus_counts, "images"))
    fig, axes = _figure(3.4 * len(panels), 3.0, 1, len(panels))
    for ax, (title, counts, unit), color in zip(axes[0], panels, MEASURED_COLORS):
        labels = _ordered(counts, GRADES)
        values = [int(counts.get(g, 0)) for g in labels]
        bars = ax.bar(range(len(labels)), values, color=color)
        ax.set_xticks(range(len(labels)), labels)
        ax.bar_label(bars, padding=2, fontsize=7)
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.margins(y=0.15)
    fig.suptitle("Overall aesthetic grades")
    _provenance(fig, f"{_who(annotator_kind)}.")
    return fig


def fig_attribute_ratings(attribute_ratings: Mapping[str, Mapping[Any, int]], annotator_kind: str):
    """Share of each rating 1-5 per attribute, as 100% stacked bars, with the mean rating."""
    import matplotlib

    attrs = _ordered(attribute_ratings, ATTRIBUTES)
    fig, axes = _figure(7, 0.35 * len(attrs) + 1.6)
    ax = axes[0, 0]
    cmap = matplotlib.colormaps["RdYlGn"]
    rows = [{int(k): int(v) for k, v in attribute_ratings[a].items()} for a in attrs]
    left = [0.0] * len(attrs)
    for r in range(1, 6):
        shares = [row.get(r, 0) / max(1, sum(row.values())) for row in rows]
        ax.barh(range(len(attrs)), shares, left=left, color=cmap((r - 1) / 4), label=str(r),
                edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, shares)]
    means = [sum(k * v for k, v in row.items()) / max(1, sum(row.values())) for row in rows]
    ax.set_yticks(range(len(attrs)),
                  [f"{ATTRIBUTE_LABELS.get(a, a)} (mean {m:.2f})" for a, m in zip(attrs, means)])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of critiques")
    ax.legend(title="rating", ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=7)
    ax.set_title("Attribute ratings (1 = very poor, 5 = excellent)")
    _provenance(fig, f"{_who(annotator_kind)}.")
    return fig


def fig_description_lengths(lengths: Sequence[int], annotator_kind: str):
    """Histogram of critique description lengths in words, with the median marked."""
    import numpy as np

    from aes_lib.style import MEASURED_COLORS

    fig, axes = _figure(5, 3)
    ax = axes[0, 0]
    values = np.asarray(lengths, dtype=float)
    ax.hist(values, bins=min(30, max(5, len(set(lengths)))), color=MEASURED_COLORS[1])
    if len(values):
        med = float(np.median(values))
        ax.axvline(med, color="black", lw=1, ls=":")
        ax.annotate(f"median {med:g}", (med, 1), xycoords=("data", "axes fraction"),
                    xytext=(3, -10), textcoords="offset points", fontsize=7)
    ax.set_xlabel("words per description")
    ax.set_ylabel("critiques")
    ax.set_title(f"Description lengths ({len(values)} critiques)")
    _provenance(fig, f"{_who(annotator_kind)}.")
    return fig


def fig_characteristic_words(words: Mapping[str, Sequence[Sequence[Any]]], annotator_kind: str,
                             top_k: int = 5):
    """Per attribute, up to ``top_k`` words of each sign of the collect stage's score, one
    small panel each. Positive scores (words said more of low ratings) and negative ones (said
    more of high ratings) get different colours; the score itself is plotted as given."""
    from aes_lib.style import MEASURED_COLORS

    attrs = _ordered(words, ATTRIBUTES)
    ncols = min(4, max(1, len(attrs)))
    nrows = math.ceil(len(attrs) / ncols) or 1
    picked = {}
    for attr in attrs:
        pairs = [(str(w), float(s)) for w, s in words[attr]]
        pos = sorted((p for p in pairs if p[1] >= 0), key=lambda p: (-p[1], p[0]))[:top_k]
        neg = sorted((p for p in pairs if p[1] < 0), key=lambda p: (p[1], p[0]))[:top_k]
        picked[attr] = pos + neg[::-1]
    most = max((len(v) for v in picked.values()), default=1)
    fig, axes = _figure(2.7 * ncols, (0.22 * most + 0.9) * nrows + 0.6, nrows, ncols)
    flat = list(axes.flat)
    for ax, attr in zip(flat, attrs):
        top = picked[attr]
        ypos = list(range(len(top)))
        colors = [MEASURED_COLORS[0] if s >= 0 else MEASURED_COLORS[2] for _, s in top]
        bars = ax.barh(ypos, [s for _, s in top], color=colors)
        ax.set_yticks(ypos, [w for w, _ in top], fontsize=7)
        ax.invert_yaxis()
        ax.bar_label(bars, [f"{s:.2f}" for _, s in top], padding=2, fontsize=6)
        ax.axvline(0, color="#555555", lw=0.6)
        ax.margins(x=0.25)
        ax.set_title(ATTRIBUTE_LABELS.get(attr, attr))
        ax.tick_params(axis="x", labelsize=6)
    for ax in flat[len(attrs):]:
        ax.set_visible(False)
    fig.suptitle("Most characteristic words per attribute: red = said of low ratings, "
                 "green = said of high ratings")
    _provenance(fig, f"{_who(annotator_kind)}. Score as the collect stage computes it "
                     "(log-odds low vs high ratings; a share of answers when one side is empty).")
    return fig


def fig_agreement(agreement: Mapping[str, float | None], annotator_kind: str):
    """Krippendorff's ordinal alpha for the grade and each attribute, with the usual thresholds."""
    from aes_lib.style import MEASURED_COLORS

    keys = _ordered(agreement, ("grade",) + ATTRIBUTES)
    values = [agreement[k] for k in keys]
    shown = [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
    fig, axes = _figure(5.5, 0.3 * len(keys) + 1.4)
    ax = axes[0, 0]
    labels = ["overall grade" if k == "grade" else ATTRIBUTE_LABELS.get(k, k) for k in keys]
    bars = ax.barh(range(len(keys)), shown, color=MEASURED_COLORS[0])
    ax.set_yticks(range(len(keys)), labels)
    ax.invert_yaxis()
    ax.bar_label(bars, ["n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"
                        for v in values], padding=2, fontsize=7)
    for x, name in ((0.667, "0.667"), (0.8, "0.8")):
        ax.axvline(x, color="#555555", lw=0.8, ls=":")
        ax.annotate(name, (x, 1.0), xycoords=("data", "axes fraction"), fontsize=6,
                    va="bottom", ha="center", color="#555555", xytext=(0, 2),
                    textcoords="offset points")
    ax.set_xlim(min(0.0, min(shown, default=0.0)) - 0.05, 1.05)
    ax.set_xlabel("Krippendorff's alpha (ordinal)")
    ax.set_title("Inter-annotator agreement", pad=14)
    _provenance(fig, f"{_who(annotator_kind)}. Dotted lines: 0.667 (tentative conclusions) and "
                     "0.8 (reliable), after Krippendorff (2004).")
    return fig


# --- instructions -------------------------------------------------------------------------

def fig_instruction_types(counts_by_type: Mapping[str, int], counts_by_qtype: Mapping[str, int]):
    """Instructions per type and per question form."""
    from aes_lib.style import MEASURED_COLORS

    fig, axes = _figure(8.5, 3.2, 1, 2)
    labels = _ordered(counts_by_type, INSTRUCTION_TYPES)
    _barh(axes[0, 0], labels, [int(counts_by_type[k]) for k in labels], MEASURED_COLORS[1])
    axes[0, 0].set_title("per instruction type")
    labels = _ordered(counts_by_qtype, QTYPES + ("level", "open", "multi-turn"))
    _barh(axes[0, 1], labels, [int(counts_by_qtype[k]) for k in labels], MEASURED_COLORS[2])
    axes[0, 1].set_title("per question form")
    for ax in axes[0]:
        ax.set_xlabel("instructions")
    fig.suptitle(f"Instructions: {sum(int(v) for v in counts_by_type.values())} in all")
    _provenance(fig, f"Counts {MEASURED} from instructions/stats.json.")
    return fig


def fig_instruction_lengths(question_lengths: Mapping[str, Sequence[int]],
                            answer_lengths: Mapping[str, Sequence[int]]):
    """Question and answer lengths (words) per instruction type, as box plots."""
    from aes_lib.style import MEASURED_COLORS

    fig, axes = _figure(8.5, 3.4, 1, 2)
    for ax, (title, data), color in zip(axes[0], (("questions", question_lengths),
                                                  ("answers", answer_lengths)), MEASURED_COLORS[1:]):
        types = _ordered([t for t in data if len(data[t])], INSTRUCTION_TYPES)
        if types:
            box = ax.boxplot([list(data[t]) for t in types], orientation="horizontal",
                             patch_artist=True, widths=0.6, flierprops={"markersize": 2})
            for patch in box["boxes"]:
                patch.set_facecolor(color)
            ax.set_yticks(range(1, len(types) + 1), [readable(t) for t in types])
        ax.invert_yaxis()
        ax.set_xlabel("words")
        ax.set_title(title)
    fig.suptitle("Instruction lengths per type")
    _provenance(fig, f"Word counts {MEASURED} from instructions/stats.json.")
    return fig


# --- training -----------------------------------------------------------------------------

#: the loss curve's title ends with the mean loss of this many last steps
LOSS_TAIL_STEPS = 20


def fig_loss_curve(loss, smoothing: float = 0.9):
    """Training loss per step (raw and exponentially smoothed) and the learning rate."""
    from aes_lib.style import MEASURED_COLORS

    has_lr = "lr" in loss.columns and loss["lr"].notna().any()
    fig, axes = _figure(6, 4.2 if has_lr else 3, 2 if has_lr else 1, 1, sharex=True,
                        gridspec_kw={"height_ratios": [3, 1]} if has_lr else None)
    ax = axes[0, 0]
    steps, values = loss["step"].tolist(), loss["loss"].astype(float).tolist()
    ax.plot(steps, values, color=MEASURED_COLORS[0], alpha=0.3, lw=0.8, label="loss")
    smooth, acc = [], 0.0
    for t, v in enumerate(values, 1):  # debiased exponential moving average
        acc = smoothing * acc + (1 - smoothing) * v
        smooth.append(acc / (1 - smoothing ** t))
    ax.plot(steps, smooth, color=MEASURED_COLORS[0], lw=1.8, label=f"smoothed (debiased EMA {smoothing:g})")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    if values:
        # one step's loss is noisy: the end is the mean of the last steps (the notebook's table
        # reports the same mean)
        tail = values[-LOSS_TAIL_STEPS:]
        ax.set_title(f"Training loss: {values[0]:.3g} at step {steps[0]}; mean of the last {len(tail)} "
                     f"step{'s' if len(tail) > 1 else ''}: {sum(tail) / len(tail):.3f}")
    if has_lr:
        axes[1, 0].plot(steps, loss["lr"].tolist(), color=MEASURED_COLORS[1], lw=1.2)
        axes[1, 0].set_ylabel("learning rate")
        axes[1, 0].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    from matplotlib.ticker import MaxNLocator

    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel("optimizer step")
    _provenance(fig, f"Loss {MEASURED} (train/run/loss.csv).")
    return fig


# --- results ------------------------------------------------------------------------------

def fig_radar_aesbench(reported: Mapping[str, Mapping[str, float]],
                       measured: Mapping[str, Mapping[str, float]],
                       columns: Mapping[str, tuple[str, float]], reported_label: str,
                       measured_label: str = MEASURED, judge: str = "", kinds: str = ""):
    """Two radars, never one: the left is AesBench's reported models (the paper's kind of
    figure), the right this run's models on this project's benchmark, with its own radial
    scale. Measured numbers come from other images, questions and judge, so drawing them
    inside the reported radar would place them "above" or "below" GPT-4V by construction.

    ``columns`` maps a key to ``(axis label, full scale)``; axes are shares of the full scale
    (accuracy out of 100 %, AesI out of 2). A missing value is a gap in the line, never a zero.
    ``kinds``: the critique kinds behind the measured numbers (e.g. ``simulated``), named under it.
    """
    import numpy as np

    from aes_lib.style import MEASURED_STYLE, REPORTED_COLORS, REPORTED_STYLE

    keys = list(columns)
    angles = np.linspace(0, 2 * np.pi, len(keys), endpoint=False).tolist()
    panels = 2 if measured else 1
    fig, axes = _figure(6.0 * panels + 1.5, 6.2, 1, panels, subplot_kw={"projection": "polar"})

    def ring(scores):
        vals = [float(scores[k]) / columns[k][1] if scores.get(k) is not None else float("nan")
                for k in keys]
        return angles + angles[:1], vals + vals[:1]

    def axis_style(ax, ticks: list[float], title: str) -> None:
        ax.set_xticks(angles, [f"{columns[k][0]}\n(of {columns[k][1]:g}{' %' if columns[k][1] == 100 else ''})"
                               for k in keys], fontsize=8)
        ax.set_ylim(0, ticks[-1])
        ax.set_yticks(ticks, [""] * len(ticks))
        # the ring labels on a white ground above the lines, half way between the first two axes
        at = math.pi / len(keys)
        for t in ticks:
            ax.text(at, t, f"{t:.0%}", fontsize=7, color="#555555", ha="center", va="center",
                    zorder=20, bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
        ax.spines["polar"].set_visible(False)
        ax.set_title(title, pad=24)

    ax = axes[0, 0]
    rep_handles, meas_handles = [], []
    for i, (model, scores) in enumerate(reported.items()):
        x, y = ring(scores)
        if all(math.isnan(v) for v in y):
            continue   # nothing to draw: no legend entry either
        (h,) = ax.plot(x, y, color=REPORTED_COLORS[i % len(REPORTED_COLORS)], label=model,
                       **REPORTED_STYLE)
        rep_handles.append(h)
    axis_style(ax, [0.25, 0.5, 0.75, 1.0], f"{_cap(reported_label)} (AesBench's images and GPT judge)")
    ax.legend(handles=rep_handles, title=_cap(reported_label) + "\n(thin, dashed)", fontsize=7,
              title_fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    notes = []
    if measured:
        ax = axes[0, 1]
        rings = {m: ring(s) for m, s in measured.items() if not all(math.isnan(v) for v in ring(s)[1])}
        shares = [v for _, y in rings.values() for v in y if not math.isnan(v)]
        ticks = radar_ticks(max(shares, default=1.0))
        same = coinciding(rings, tol=0.01)
        n = len(rings)
        for k, (model, (x, y)) in enumerate(rings.items()):
            color = model_color(model)
            # drawn one over the other, each thinner with a smaller marker of its own shape than the
            # one before, so a line that lies exactly on another still shows around it
            style = {**MEASURED_STYLE, "lw": 1.4 + 2.6 * (n - 1 - k) / max(1, n - 1),
                     "markersize": 4 + 6 * (n - 1 - k) / max(1, n - 1),
                     "marker": RADAR_MARKERS[k % len(RADAR_MARKERS)], "zorder": 5 + k}
            label = model
            if model in same:
                label += f" (= {same[model]})"
            values = [v for v in y if not math.isnan(v)]
            if values and max(abs(v) for v in values) < 0.0005:
                label += " (0 on every axis: at the centre)"
            (h,) = ax.plot(x, y, color=color, label=label, **style)
            if not any(math.isnan(v) for v in y):   # a fill would draw a missing value as zero
                ax.fill(x, y, color=color, alpha=0.06)
            meas_handles.append(h)
        judged = f", AesI judged by {judge}" if judge else ""
        axis_style(ax, ticks, f"{_cap(measured_label)} (this project's benchmark{judged})")
        ax.legend(handles=meas_handles, title=_cap(measured_label) + "\n(thick, solid)", fontsize=7,
                  title_fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        if same:
            notes.append("Right: \"(= X)\": the line lies on X's (within 1 % of the full scale wherever "
                         "both are measured); lines are drawn over one another, each thinner with a smaller "
                         "marker, so both show.")
    fig.suptitle("Benchmark dimensions, as a share of each full scale")
    _provenance(fig, "Left and right are different benchmarks (images, questions, judge) with "
                     "their own radial scales: they are not directly comparable. A gap in a line "
                     "is a value not measured." + (f"\nRight: some answers and AesI references come "
                                                   f"from {kinds} critiques." if kinds else "")
                + "".join("\n" + n for n in notes))
    return fig


#: marker shapes of the measured radar's series, in drawing order
RADAR_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")


def radar_ticks(largest: float) -> list[float]:
    """Round ring values (shares) for a radar whose largest value is ``largest``: 3 to 5 rings
    in steps of 5, 10, 20 or 25 %, the last one at or above ``largest``."""
    for step in (0.05, 0.1, 0.2, 0.25):
        n = max(1, math.ceil(largest / step - 1e-9))
        if n <= 5:
            n = max(n, 3)
            return [round(step * i, 4) for i in range(1, n + 1)]
    return [0.25, 0.5, 0.75, 1.0]


def coinciding(rings: Mapping[str, tuple[list, list]], tol: float) -> dict[str, str]:
    """Series drawn exactly over an earlier one: ``{later: earlier}`` when they differ by at most
    ``tol`` (a share) on every axis where both are measured, and share at least two axes."""
    out: dict[str, str] = {}
    names = list(rings)
    for j, b in enumerate(names):
        for a in names[:j]:
            pairs = [(u, v) for u, v in zip(rings[a][1][:-1], rings[b][1][:-1])
                     if not (math.isnan(u) or math.isnan(v))]
            if len(pairs) >= 2 and all(abs(u - v) <= tol for u, v in pairs):
                out[b] = a
                break
    return out


def fig_bars(results, group_by: str, judge: str = ""):
    """Bars per ``group_by`` group, one bar per model, with the confidence interval, one panel
    per dimension (accuracy for multiple choice, the AesI overall score for AesI)."""
    import numpy as np

    from aes_lib.report.loaders import split_metric
    from aes_lib.schema import DIMENSIONS

    sub = results[results["group_by"] == group_by]
    base_judge = [split_metric(m) for m in sub["metric"]]
    sub = sub.assign(_base=[b for b, _ in base_judge], _judge=[j for _, j in base_judge])
    wanted = (sub["_base"] == "accuracy") | ((sub["_base"] == "overall") & (sub["_judge"] == judge))
    sub = sub[wanted]
    dims = _ordered(sorted(set(sub["dimension"])), DIMENSIONS)
    models = list(dict.fromkeys(sub["model"]))
    n_groups = max((len(set(sub[sub["dimension"] == d]["group"].astype(str))) for d in dims), default=1)
    # a panel wide enough for every bar (about 0.15 inch each) and every group's name (an inch),
    # two panels a row
    panel_w = max(3.4, n_groups * max(0.15 * max(1, len(models)), 1.0) + 1.2)
    ncols = min(2, max(1, len(dims)))
    nrows = math.ceil(max(1, len(dims)) / ncols)
    fig, grid = _figure(panel_w * ncols, 3.2 * nrows + 0.4, nrows, ncols)
    axes = grid.reshape(1, -1)
    for ax in list(axes[0])[len(dims):]:
        ax.set_visible(False)
    order = {"attribute": ATTRIBUTES, "qtype": QTYPES, "source": ("NIs", "AIs", "AGIs")}.get(group_by, ())
    zero_marks = False
    for ax, dim in zip(axes[0], dims):
        d = sub[sub["dimension"] == dim]
        groups = _ordered(sorted(set(d["group"].astype(str))), order)
        scale = 1.0 if dim == "AesI" else 100.0
        width = 0.8 / max(1, len(models))
        top = 0.0
        for i, model in enumerate(models):
            m = d[d["model"] == model].set_index(d[d["model"] == model]["group"].astype(str))
            vals = np.array([m["value"].get(g, np.nan) for g in groups], dtype=float) * scale
            lo = np.array([m["ci_low"].get(g, np.nan) for g in groups], dtype=float) * scale
            hi = np.array([m["ci_high"].get(g, np.nan) for g in groups], dtype=float) * scale
            err = np.nan_to_num(np.vstack([vals - lo, hi - vals]).clip(min=0))
            if np.isnan(vals).all():
                continue   # this model has no result here: no empty bars, no legend entry
            x = np.arange(len(groups)) + (i - (len(models) - 1) / 2) * width
            ax.bar(x, vals, width, yerr=err, capsize=2, color=model_color(model),
                   label=model, error_kw={"lw": 0.8})
            top = max(top, np.nanmax(np.fmax(vals, hi)))
            zero = np.isclose(np.nan_to_num(vals, nan=1.0), 0.0, atol=1e-9)
            if zero.any():   # a bar of height 0 is invisible: mark it, so it is not read as missing
                ax.plot(x[zero], np.zeros(int(zero.sum())), ls="none", marker="x", markersize=5,
                        color=model_color(model), clip_on=False, zorder=6, label=model)
                zero_marks = True
        # long names (package names of image sources) wrap at their hyphens instead of tilting
        # into the next panel
        labels = [wrap_label(ATTRIBUTE_LABELS.get(g) or readable(g)) for g in groups]
        tilt = len(groups) > 6
        ax.set_xticks(range(len(groups)), labels, rotation=30 if tilt else 0,
                      ha="right" if tilt else "center", rotation_mode="anchor", fontsize=8)
        if dim == "AesI":
            # the full 0-2 scale would flatten every value near 0: the axis ends above the data
            # and says so in its label
            cut = min(2.0, max(0.1, math.ceil(top * 1.15 * 10) / 10))
            ax.set_ylim(0, cut)
            ax.set_ylabel(f"overall [{judge}]\n(scale 0-2" + (f", axis cut at {cut:g})" if cut < 2 else ")"))
        else:
            ax.set_ylim(0, 100)
            ax.set_ylabel("accuracy (%)")
        ax.set_title(dim)
    if not dims:
        axes[0, 0].text(0.5, 0.5, f"no results grouped by {group_by}", ha="center", va="center",
                        transform=axes[0, 0].transAxes)
    else:
        shown = {}   # every model drawn in any panel, once, in the models' order
        for ax in axes[0]:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                shown.setdefault(label, handle)
        fig.legend([shown[m] for m in models if m in shown], [m for m in models if m in shown],
                   title="model", fontsize=7, loc="outside right upper")
    what = {"qtype": "question form", "source": "image source"}.get(group_by, group_by)
    fig.suptitle(f"Results per {what} and model (error bars: confidence interval)")
    kinds = sorted({k for v in (sub["annotator_kind"] if "annotator_kind" in sub.columns else [])
                    if isinstance(v, str) and v for k in v.split("+")})
    _provenance(fig, f"All numbers {MEASURED} on this project's benchmark (eval/results.csv), "
                     "not AesBench." + (f" Some answers and AesI references come from {' and '.join(kinds)} "
                                        "critiques." if kinds else "")
                + ("\n\u00d7 on the axis: a value of 0 (a bar of no height)." if zero_marks else ""))
    return fig
