"""Importers of real critique data: PCCD, generic CSV / JSONL, and score-only files.

Every importer returns an :class:`ImportResult`: the critiques it could map onto the protocol
and, for every row it skipped, the row number, the reason (``missing grade``, ``empty text``,
``unparsable score``, ``image path outside the image folder``, ...) and the raw row. Nothing is
skipped silently. Imported critiques carry ``annotator_kind="imported"``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aes_lib.schema import ATTRIBUTES, GRADES, RATING_MAX, RATING_MIN, Critique

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("pccd", "csv", "jsonl", "scores")

#: PCCD's seven attribute critiques, in the order of its ``score`` list (Aestheval's loader).
PCCD_SCORE_ORDER: tuple[str, ...] = ("general_impression", "subject_of_photo", "composition",
                                     "use_of_camera", "depth_of_field", "color_lighting", "focus")
#: How PCCD's fields are labelled when they are joined into a description.
PCCD_LABELS: dict[str, str] = {
    "general_impression": "General impression", "subject_of_photo": "Subject",
    "composition": "Composition", "use_of_camera": "Use of camera", "depth_of_field": "Depth of field",
    "color_lighting": "Colour and lighting", "focus": "Focus",
}
#: How PCCD's fields map onto the protocol's attributes (several PCCD fields are averaged).
PCCD_TO_ATTRIBUTE: dict[str, tuple[str, ...]] = {
    "technical_quality": ("use_of_camera", "depth_of_field", "focus"),
    "color_light": ("color_lighting",),
    "composition": ("composition",),
    "content": ("subject_of_photo",),
}
#: Lower bounds of the normalised score (0..1) for each grade, best first; below the last: bad.
GRADE_THRESHOLDS: tuple[float, ...] = (0.8, 0.6, 0.4, 0.2)


class RowError(ValueError):
    """A row that cannot be imported; ``reason`` is the short category."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class ImportResult:
    source: str
    critiques: list[Critique] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return len(self.critiques)

    @property
    def skipped(self) -> int:
        return len(self.rejects)

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "imported": self.imported, "skipped": self.skipped,
                "skipped_by_reason": dict(sorted(Counter(r["reason"] for r in self.rejects).items()))}


# --- value parsing -------------------------------------------------------------------------

def parse_number(value: Any, name: str) -> float | None:
    """A number from a number or a numeric string; ``None`` for empty / 'N' (not rated)."""
    if value is None or isinstance(value, bool):
        return None if value is None else _raise_score(name, value)
    if isinstance(value, (int, float)):
        if math.isnan(value):
            return None
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "" or text.upper() in ("N", "NA", "N/A", "NAN", "NONE", "NULL"):
            return None
        try:
            return float(text)
        except ValueError:
            pass
    return _raise_score(name, value)


def _raise_score(name: str, value: Any):
    raise RowError("unparsable score", f"{name}={value!r}")


def normalise(score: float, lo: float, hi: float, name: str) -> float:
    if not lo <= score <= hi:
        raise RowError("score out of range", f"{name}={score:g} is outside [{lo:g}, {hi:g}]")
    return (score - lo) / (hi - lo)


def score_to_grade(score: float, lo: float, hi: float, name: str = "score") -> str:
    """Map a score on [lo, hi] onto the five grades by equal-width bins."""
    x = normalise(score, lo, hi, name)
    for grade, threshold in zip(GRADES, GRADE_THRESHOLDS):
        if x >= threshold:
            return grade
    return GRADES[-1]


def score_to_rating(score: float, lo: float, hi: float, name: str = "score") -> int:
    """Map a score on [lo, hi] linearly onto the 1-5 attribute rating."""
    x = normalise(score, lo, hi, name)
    return int(min(RATING_MAX, max(RATING_MIN, math.floor(RATING_MIN + x * (RATING_MAX - RATING_MIN) + 0.5))))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    return re.sub(r"\s+", " ", value).strip()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "image"


# --- image paths ----------------------------------------------------------------------------

def is_url(value: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", value))


def resolve_image(value: Any, images_dir: str | Path | None) -> tuple[str, str]:
    """``(image_id, image)`` for an image reference; refuses paths outside ``images_dir``.

    URLs are kept as they are. A path is taken relative to ``images_dir`` (absolute paths must
    lie inside it); without an image folder only relative paths without ``..`` are accepted.
    """
    ref = _text(value)
    if not ref:
        raise RowError("missing image", "no image reference")
    if is_url(ref):
        if ref.startswith("file:"):
            raise RowError("image path outside the image folder", f"{ref!r}: file URLs are refused")
        return _slug(Path(ref.split("?")[0]).stem), ref
    path = Path(ref)
    if images_dir is None:
        if path.is_absolute() or ".." in path.parts:
            raise RowError("image path outside the image folder",
                           f"{ref!r}: give --images DIR to import absolute paths")
        rel = path
    else:
        root = Path(images_dir).resolve()
        full = (path if path.is_absolute() else root / path).resolve()
        if full != root and root not in full.parents:
            raise RowError("image path outside the image folder", f"{ref!r} is not inside {root}")
        rel = full.relative_to(root)
    return rel.with_suffix("").as_posix(), rel.as_posix()


# --- readers --------------------------------------------------------------------------------

def read_rows(path: str | Path, fmt: str) -> list[Any]:
    """The rows of a file: a JSON list (pccd, scores), JSON lines (jsonl) or CSV (csv)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if fmt == "csv":
        import csv

        with path.open(encoding="utf-8-sig", newline="") as fh:
            return list(csv.DictReader(fh))
    text = path.read_text(encoding="utf-8-sig")
    if fmt == "jsonl":
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    rows.append({"__unparsable_line__": line, "__error__": f"line {lineno}: {e}"})
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict):  # {image: score} or {image: record}
        data = [{"image": k, **v} if isinstance(v, dict) else {"image": k, "gt_score": v}
                for k, v in data.items()]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records for format {fmt!r}")
    return data


# --- row mappers ----------------------------------------------------------------------------

@dataclass
class ImportOptions:
    source: str = ""
    protocol_version: str = ""
    images_dir: str | Path | None = None
    score_min: float = 1.0
    score_max: float = 10.0
    require_text: bool = True
    #: generic importers: our field -> the file's column (fields: image, grade, score,
    #: description, suggestion, annotator, <attribute>, <attribute>_word)
    columns: dict[str, str] = field(default_factory=dict)


def map_pccd_row(row: Any, i: int, opt: ImportOptions) -> Critique:
    if not isinstance(row, dict):
        raise RowError("not a record", f"expected a JSON object, got {type(row).__name__}")
    # the id comes from the image reference: titles repeat ("Untitled") and would merge photos
    image_id, image = resolve_image(row.get("image_url") or row.get("image"), opt.images_dir)
    if is_url(image) and opt.images_dir is not None:   # images downloaded into the image folder
        local = Path(image.split("?")[0]).name
        if (Path(opt.images_dir) / local).is_file():
            image = local
    overall = parse_number(row.get("overall"), "overall")
    if overall is None:
        raise RowError("missing grade", "no 'overall' score")
    grade = score_to_grade(overall, opt.score_min, opt.score_max, "overall")
    scores = row.get("score")
    if scores is None:
        scores = [None] * len(PCCD_SCORE_ORDER)
    if not isinstance(scores, list) or len(scores) != len(PCCD_SCORE_ORDER):
        raise RowError("unparsable score", f"'score' must be a list of {len(PCCD_SCORE_ORDER)}, got {scores!r}")
    by_field = {f: parse_number(s, f"score[{f}]") for f, s in zip(PCCD_SCORE_ORDER, scores)}
    texts = {f: _text(row.get(f)) for f in PCCD_SCORE_ORDER}
    if not any(texts.values()):
        raise RowError("empty text", "every attribute critique is empty")
    attributes = {}
    for attr, fields_ in PCCD_TO_ATTRIBUTE.items():
        values = [by_field[f] for f in fields_ if by_field[f] is not None]
        if values:
            rating = score_to_rating(sum(values) / len(values), opt.score_min, opt.score_max,
                                     f"score[{'+'.join(fields_)}]")
            attributes[attr] = {"rating": rating, "word": None}
    description = texts["general_impression"] or " ".join(
        f"{PCCD_LABELS[f]}: {t}" for f, t in texts.items() if t)
    reviewer = _text(row.get("reviewer")) or "pccd-reviewer"
    return Critique(
        id=f"{opt.source}:{i:05d}:{image_id}", image_id=image_id, annotator=reviewer,
        annotator_kind="imported", protocol_version=opt.protocol_version, grade=grade,
        attributes=attributes, description=description, suggestion="", source=opt.source,
        extra={"image": image, "overall": overall, "title": _text(row.get("title")),
               "category": _text(row.get("category")), "pccd_scores": by_field,
               "attribute_texts": {f: t for f, t in texts.items() if t}},
    )


def _col(row: dict, opt: ImportOptions, name: str, *fallbacks: str) -> Any:
    if name in opt.columns:
        col = opt.columns[name]
        if col not in row:
            raise RowError("missing column", f"mapped column {col!r} (for {name}) is not in the row")
        return row[col]
    for key in (name, *fallbacks):
        if key in row:
            return row[key]
    return None


def map_generic_row(row: Any, i: int, opt: ImportOptions) -> Critique:
    if not isinstance(row, dict):
        raise RowError("not a record", f"expected an object, got {type(row).__name__}")
    if "__unparsable_line__" in row:
        raise RowError("unparsable row", row["__error__"])
    image_id, image = resolve_image(_col(row, opt, "image", "image_id", "file", "path"), opt.images_dir)
    grade_value = _text(_col(row, opt, "grade"))
    if grade_value:
        grade = grade_value.lower()
        if grade not in GRADES:
            num = parse_number(grade_value, "grade")
            grade = score_to_grade(num, opt.score_min, opt.score_max, "grade")
    else:
        score = parse_number(_col(row, opt, "score", "gt_score", "mos"), "score")
        if score is None:
            raise RowError("missing grade", "no grade and no score")
        grade = score_to_grade(score, opt.score_min, opt.score_max, "score")
    attributes = {}
    for attr in ATTRIBUTES:
        raw = _col(row, opt, attr, f"{attr}_rating")
        rating = parse_number(raw, attr)
        if rating is None:
            continue
        if rating != int(rating) or not RATING_MIN <= rating <= RATING_MAX:
            raise RowError("unparsable score", f"{attr}={raw!r} is not an integer {RATING_MIN}-{RATING_MAX}")
        attributes[attr] = {"rating": int(rating), "word": _text(_col(row, opt, f"{attr}_word")) or None}
    description = _text(_col(row, opt, "description", "critique", "text", "comment"))
    if opt.require_text and not description:
        raise RowError("empty text", "the description is empty")
    annotator = _text(_col(row, opt, "annotator", "reviewer", "rater")) or opt.source
    return Critique(
        id=f"{opt.source}:{i:05d}:{image_id}", image_id=image_id, annotator=annotator,
        annotator_kind="imported", protocol_version=opt.protocol_version, grade=grade,
        attributes=attributes, description=description,
        suggestion=_text(_col(row, opt, "suggestion")), source=opt.source, extra={"image": image},
    )


def map_scores_row(row: Any, i: int, opt: ImportOptions) -> Critique:
    if not isinstance(row, dict):
        raise RowError("not a record", f"expected an object, got {type(row).__name__}")
    image_id, image = resolve_image(_col(row, opt, "image", "image_id", "file", "name"), opt.images_dir)
    score = parse_number(_col(row, opt, "score", "gt_score", "mos"), "gt_score")
    if score is None:
        raise RowError("missing grade", "no score")
    return Critique(
        id=f"{opt.source}:{i:05d}:{image_id}", image_id=image_id, annotator=opt.source,
        annotator_kind="imported", protocol_version=opt.protocol_version,
        grade=score_to_grade(score, opt.score_min, opt.score_max, "gt_score"),
        source=opt.source, extra={"image": image, "score": score,
                                  "score_range": [opt.score_min, opt.score_max]},
    )


MAPPERS: dict[str, Callable[[Any, int, ImportOptions], Critique]] = {
    "pccd": map_pccd_row, "csv": map_generic_row, "jsonl": map_generic_row, "scores": map_scores_row,
}


def import_file(path: str | Path, fmt: str, options: ImportOptions | None = None) -> ImportResult:
    """Read ``path`` in format ``fmt`` and map every row; bad rows become rejects with a reason."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown import format {fmt!r} (expected one of {', '.join(FORMATS)})")
    opt = options or ImportOptions()
    if not opt.source:
        opt.source = f"{fmt}:{Path(path).stem}"
    if not opt.protocol_version:
        opt.protocol_version = f"import:{fmt}"
    if opt.score_max <= opt.score_min:
        raise ValueError(f"score range [{opt.score_min}, {opt.score_max}] is empty")
    if opt.images_dir is not None and not Path(opt.images_dir).is_dir():
        raise FileNotFoundError(f"{opt.images_dir}: image folder not found")
    result = ImportResult(source=opt.source)
    mapper = MAPPERS[fmt]
    rows = read_rows(path, fmt)
    if not rows:
        raise ValueError(f"{path}: no rows to import (an empty file, or a CSV with only a header line)")
    for i, row in enumerate(rows):
        try:
            critique = mapper(row, i, opt)
            critique.validate()
        except RowError as e:
            result.rejects.append({"row": i, "reason": e.reason, "detail": e.detail,
                                   "file": str(path), "record": row})
            continue
        except ValueError as e:  # a schema error in the mapped record
            result.rejects.append({"row": i, "reason": "invalid record", "detail": str(e),
                                   "file": str(path), "record": row})
            continue
        result.critiques.append(critique)
    log.info("%s: imported %d, skipped %d %s", path, result.imported, result.skipped,
             result.summary()["skipped_by_reason"])
    return result
