"""One plotting style for every figure: fixed fonts and sizes, so figures render the same."""

from __future__ import annotations

from pathlib import Path

#: Colours for series measured by this run and series reported by a paper, kept apart.
MEASURED_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd")
REPORTED_COLORS = ("#7f7f7f", "#bcbd22", "#8c564b", "#e377c2", "#17becf", "#ff7f0e")
#: This project's own models keep one colour in every figure and every run (a colour picked by
#: position would swap when a figure lists models in another order); other models get a colour
#: from their name.
MODEL_COLORS = {"base": "#1f77b4", "finetuned": "#d62728",
                "base-generate": "#9ecae1", "finetuned-generate": "#fc9272",
                # the controls (aes_lib.evaluate.controls) beside them
                "blind-prior": "#2ca02c", "base:shuffled-images": "#9467bd",
                "finetuned:shuffled-images": "#ff7f0e"}
OTHER_MODEL_COLORS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#000000")
#: How keys of the data read on a figure (anything else: underscores become spaces).
READABLE_LABELS = {
    "perception_mcq": "perception (multiple choice)", "empathy_mcq": "empathy (multiple choice)",
    "level_mcq": "aesthetic level (multiple choice)", "color_cast": "colour cast",
    "color_light": "colour & light", "technical_quality": "technical quality", "bad_crop": "bad crop",
    "multi-turn": "multi-turn", "yes-no": "yes / no",
}
#: Line styles that keep the two apart even in grey print: reported = thin dashed, no markers;
#: measured = thick solid with markers.
REPORTED_STYLE = {"lw": 1.0, "ls": "--", "alpha": 0.75}
MEASURED_STYLE = {"lw": 2.6, "ls": "-", "marker": "o", "markersize": 5, "zorder": 5}

#: Every figure is written in these formats, with fixed metadata: PDF without dates or a
#: version string, PNG without "Software", so the same figure gives the same bytes.
FIGURE_FORMATS = ("pdf", "png")
PDF_METADATA = {"Creator": "aes_lib", "Producer": "aes_lib", "CreationDate": None, "ModDate": None}
PNG_METADATA = {"Software": None}


def model_color(name: str) -> str:
    """The colour of a model's series; a run label in brackets (``"base (cpu profile)"``) or a
    ``-scores`` suffix does not change it."""
    import hashlib

    key = str(name).split(" (")[0].strip()
    key = key[:-len("-scores")] if key.endswith("-scores") else key
    if key in MODEL_COLORS:
        return MODEL_COLORS[key]
    return OTHER_MODEL_COLORS[hashlib.sha256(key.encode()).digest()[0] % len(OTHER_MODEL_COLORS)]


def readable(key: str) -> str:
    """A data key as a reader should see it on a figure: no snake_case."""
    key = str(key)
    return READABLE_LABELS.get(key, key.replace("_", " "))


def apply_style() -> None:
    import matplotlib as mpl

    mpl.rcParams.update({
        "font.family": "DejaVu Sans",
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "savefig.bbox": "tight",
        "pdf.fonttype": 42,
        "svg.hashsalt": "aes",
        "path.simplify": True,
    })


def save_figure(fig, stem: str | Path, dpi: float | None = None, palette: bool = True) -> list[Path]:
    """Write ``<stem>.pdf`` and ``<stem>.png`` atomically with deterministic bytes; return the
    paths (in :data:`FIGURE_FORMATS` order). The one way every stage saves a figure.

    ``palette``: store the PNG with 256 colours (a chart's flat colours survive; the file is about
    a third of the size, which keeps notebooks and the gallery light). Photographs band a little
    in 256 colours: pass ``palette=False`` where that matters (the contact sheet, an overview of
    thumbnails, keeps the palette and a low ``dpi``)."""
    import io

    from aes_lib.io import atomic_write_bytes

    stem = Path(stem)
    _check(fig, stem, dpi)
    paths = []
    for ext in FIGURE_FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, metadata=PDF_METADATA if ext == "pdf" else PNG_METADATA,
                    **({"dpi": dpi} if dpi else {}))
        data = buf.getvalue()
        if ext == "png" and palette:
            data = _palette_png(data)
        paths.append(atomic_write_bytes(stem.parent / f"{stem.name}.{ext}", data))
    return paths


def _check(fig, stem: Path, dpi: float | None) -> None:
    """With ``AES_FIGURE_CHECK`` set, the reader's check of :mod:`aes_lib.report.figcheck`:
    ``warn`` logs each problem, ``strict`` raises naming the figure."""
    import logging
    import os

    mode = os.environ.get("AES_FIGURE_CHECK", "").strip().lower()
    if mode in ("", "0", "off", "no"):
        return
    from aes_lib.report.figcheck import check_figure

    problems = check_figure(fig, dpi)
    if not problems:
        return
    if mode == "strict":
        raise ValueError(f"{stem}.png: figure check: " + "; ".join(problems))
    for p in problems:
        logging.getLogger(__name__).warning("%s.png: %s", stem, p)


def _palette_png(data: bytes) -> bytes:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                           dither=Image.Dither.NONE)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
