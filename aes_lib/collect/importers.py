"""Importers of real critique data: PCCD, generic CSV / JSONL, and score-only files.

Every importer returns an :class:`ImportResult`: the critiques it could map onto the protocol
and, for every row it skipped, the row number, the reason (``missing grade``, ``empty text``,
``unparsable score``, ``image path outside the image folder``, ``truncated or corrupt image``,
``duplicate``, ...; :data:`REJECT_REASONS` lists them all) and the raw row. Nothing is skipped
silently. Imported critiques carry ``annotator_kind="imported"``.

A critique's id comes from its content: ``<source>:<annotator>:<image_id>`` (see
:func:`critique_id`), so importing a file again, or an edited copy with rows added or moved,
replaces the same critiques instead of adding new ones. Within one file, a second row by the
same annotator for the same image is rejected as ``duplicate`` (the first row is kept).
"""

from __future__ import annotations

import hashlib
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

#: Every reason a row can be rejected for, with what it means (docs/collect.md lists the same).
REJECT_REASONS: dict[str, str] = {
    "not a record": "the row is not a JSON object",
    "unparsable row": "a JSON line that does not parse, or a CSV row with more fields than the header",
    "missing column": "a column named by --map is not in the row",
    "wrong type": "a field holds a list, an object or true/false where text or a number belongs",
    "missing grade": "no grade and no score (empty, null, 'N', 'NA')",
    "unparsable score": "a grade, score or rating that is not a number (or a grade name)",
    "non-finite score": "a score or rating that is NaN or infinite",
    "score out of range": "a score outside [--score-min, --score-max], or a rating outside 1-5",
    "empty text": "no description (csv/jsonl) or every critique text empty (pccd)",
    "missing image": "no image reference",
    "image path outside the image folder": "a path leading out of --images, or a file:// URL",
    "image not found": "the image file does not exist in --images",
    "empty image file": "the image file has zero bytes",
    "unreadable image": "the file is not an image format PIL can open",
    "truncated or corrupt image": "the image header opens but its pixels do not decode",
    "unsupported image": "an animated or multi-frame file (GIF, APNG, WebP, TIFF pages): save one frame",
    "duplicate": "the same annotator already rated the same image in an earlier row of this file",
    "invalid record": "the mapped critique fails the schema",
}
#: How duplicates within one file are resolved (recorded in import_summary.json).
DUPLICATE_RULE = ("one critique per (source, annotator, image): the first row is kept, later rows "
                  "are rejected as 'duplicate'; importing again replaces the stored critique")


class RowError(ValueError):
    """A row that cannot be imported; ``reason`` is the short category."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in REJECT_REASONS, reason
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class ImportResult:
    source: str
    critiques: list[Critique] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    #: local images decoded and found intact, and local images not checked (no --images folder)
    images_checked: int = 0
    images_unchecked: int = 0
    #: set when stored: added / replaced / unchanged / legacy_removed (CritiqueStore.add_imported)
    store_counts: dict[str, int] = field(default_factory=dict)

    @property
    def imported(self) -> int:
        return len(self.critiques)

    @property
    def skipped(self) -> int:
        return len(self.rejects)

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "imported": self.imported, "skipped": self.skipped,
                "skipped_by_reason": dict(sorted(Counter(r["reason"] for r in self.rejects).items())),
                "images_checked": self.images_checked, "images_unchecked": self.images_unchecked,
                "duplicate_rule": DUPLICATE_RULE}


# --- value parsing -------------------------------------------------------------------------

def parse_number(value: Any, name: str) -> float | None:
    """A number from a number or a numeric string; ``None`` for empty / 'N' (not rated)."""
    if value is None:
        return None
    if isinstance(value, (list, dict, bool)):
        raise RowError("wrong type", f"{name}: expected a number, got {_kind(value)} {_short(value)}")
    number: float | None = None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:   # an integer too large for a float
            number = math.inf
    elif isinstance(value, str):
        text = value.strip()
        if text == "" or text.upper() in ("N", "NA", "N/A", "NONE", "NULL"):
            return None
        try:
            number = float(text)
        except ValueError:
            pass
    if number is None:
        return _raise_score(name, value)
    if not math.isfinite(number):
        raise RowError("non-finite score", f"{name}={value!r} is {'NaN' if math.isnan(number) else 'infinite'}")
    return number


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


def _kind(value: Any) -> str:
    return {list: "a list", dict: "an object", bool: "true/false"}.get(type(value), type(value).__name__)


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


def _text(value: Any, name: str = "text") -> str:
    """Text of a field: strings as they are (whitespace squeezed), numbers written out; a list,
    object or true/false is a ``wrong type`` reject, never turned into its Python repr."""
    if value is None:
        return ""
    if isinstance(value, (list, dict, bool)):
        raise RowError("wrong type", f"{name}: expected text, got {_kind(value)} {_short(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RowError("wrong type", f"{name}: expected text, got the number {value!r}")
    if not isinstance(value, str):
        value = str(value)
    return re.sub(r"\s+", " ", value).strip()


def critique_id(source: str, annotator: str, image_id: str) -> str:
    """The id of an imported critique, from its content: who rated which image, from which source.
    Row numbers play no part, so re-importing an edited file replaces instead of adding."""
    return f"{source}:{annotator}:{image_id}"


def record_sha256(record: Any) -> str:
    """sha256 of a source record's canonical JSON (kept in ``extra`` as its provenance)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
                          .encode("utf-8")).hexdigest()


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
    ref = _text(value, "image")
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


def image_problem(path: Path) -> tuple[str, str] | None:
    """``(reason, detail)`` when an image file is missing, empty or does not decode; else None.

    The pixels are decoded (``load``), not only the header, so a truncated file is caught. JPEGs
    decode in draft mode at 1/8 scale: every byte of the entropy-coded data is still read (a cut
    file fails), at a fraction of the cost of a full-size decode.
    """
    from PIL import Image, UnidentifiedImageError

    from aes_lib.images import unsupported_reason

    if not path.is_file():
        return "image not found", f"{path} does not exist"
    if path.stat().st_size == 0:
        return "empty image file", f"{path} has zero bytes"
    try:
        with Image.open(path) as im:
            if unsupported_reason(im):   # the pipeline's one loader refuses it: aes_lib.images
                return "unsupported image", f"{path}: {unsupported_reason(im)}"
            if im.format == "JPEG":
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except UnidentifiedImageError:
        return "unreadable image", f"{path} is not an image file PIL can read"
    except Image.DecompressionBombError as e:
        return "unreadable image", f"{path}: {e}"
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        return "truncated or corrupt image", f"{path}: {e}"
    return None


# --- readers --------------------------------------------------------------------------------

#: key under which a CSV row's fields beyond the header are kept (csv.DictReader's ``restkey``)
EXTRA_FIELDS = "__extra_fields__"


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
                         "re-save the file as UTF-8") from None


def read_rows(path: str | Path, fmt: str) -> list[Any]:
    """The rows of a file: a JSON list (pccd, scores), JSON lines (jsonl) or CSV (csv).
    Errors about the whole file (not UTF-8, not JSON, nested too deeply) name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not a file to import")
    text = _read_text(path)
    if fmt == "csv":
        import csv
        import io

        reader = csv.DictReader(io.StringIO(text, newline=""), restkey=EXTRA_FIELDS)
        try:
            rows = list(reader)
        except csv.Error as e:
            raise ValueError(f"{path}: line {reader.line_num}: not readable as CSV ({e})") from None
        if reader.fieldnames and len(set(reader.fieldnames)) != len(reader.fieldnames):
            raise ValueError(f"{path}: the header names a column twice: {reader.fieldnames}")
        return rows
    if fmt == "jsonl":
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    rows.append({"__unparsable_line__": _short(line, 500), "__error__": f"line {lineno}: {e}"})
                except RecursionError:
                    rows.append({"__unparsable_line__": _short(line, 500),
                                 "__error__": f"line {lineno}: JSON nested too deeply to read"})
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read (a list or object inside "
                         "another, hundreds of levels down)") from None
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
    texts = {f: _text(row.get(f), f) for f in PCCD_SCORE_ORDER}
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
    reviewer = _text(row.get("reviewer"), "reviewer") or "pccd-reviewer"
    return Critique(
        id=critique_id(opt.source, reviewer, image_id), image_id=image_id, annotator=reviewer,
        annotator_kind="imported", protocol_version=opt.protocol_version, grade=grade,
        attributes=attributes, description=description, suggestion="", source=opt.source,
        extra={"image": image, "overall": overall, "title": _text(row.get("title"), "title"),
               "category": _text(row.get("category"), "category"), "pccd_scores": by_field,
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
    if EXTRA_FIELDS in row:
        extra_fields = row[EXTRA_FIELDS]
        raise RowError("unparsable row", f"{len(extra_fields)} field(s) more than the header has "
                                         f"({_short(extra_fields)}): an unquoted comma?")
    image_id, image = resolve_image(_col(row, opt, "image", "image_id", "file", "path"), opt.images_dir)
    grade_value = _text(_col(row, opt, "grade"), "grade")
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
            raise RowError("unparsable score" if rating != int(rating) else "score out of range",
                       f"{attr}={raw!r} is not an integer {RATING_MIN}-{RATING_MAX}")
        attributes[attr] = {"rating": int(rating),
                            "word": _text(_col(row, opt, f"{attr}_word"), f"{attr}_word") or None}
    description = _text(_col(row, opt, "description", "critique", "text", "comment"), "description")
    if opt.require_text and not description:
        raise RowError("empty text", "the description is empty")
    annotator = _text(_col(row, opt, "annotator", "reviewer", "rater"), "annotator") or opt.source
    return Critique(
        id=critique_id(opt.source, annotator, image_id), image_id=image_id, annotator=annotator,
        annotator_kind="imported", protocol_version=opt.protocol_version, grade=grade,
        attributes=attributes, description=description,
        suggestion=_text(_col(row, opt, "suggestion"), "suggestion"), source=opt.source,
        extra={"image": image},
    )


def map_scores_row(row: Any, i: int, opt: ImportOptions) -> Critique:
    if not isinstance(row, dict):
        raise RowError("not a record", f"expected an object, got {type(row).__name__}")
    image_id, image = resolve_image(_col(row, opt, "image", "image_id", "file", "name"), opt.images_dir)
    score = parse_number(_col(row, opt, "score", "gt_score", "mos"), "gt_score")
    if score is None:
        raise RowError("missing grade", "no score")
    return Critique(
        id=critique_id(opt.source, opt.source, image_id), image_id=image_id, annotator=opt.source,
        annotator_kind="imported", protocol_version=opt.protocol_version,
        grade=score_to_grade(score, opt.score_min, opt.score_max, "gt_score"),
        source=opt.source, extra={"image": image, "score": score,
                                  "score_range": [opt.score_min, opt.score_max]},
    )


def _reject(i: int, reason: str, detail: str, path: str | Path, row: Any) -> dict[str, Any]:
    return {"row": i, "reason": reason, "detail": detail, "file": str(path), "record": row}


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
    images: dict[str, tuple[str, str] | None] = {}   # each local image is decoded once
    first_row: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        try:
            critique = mapper(row, i, opt)
            critique.validate()
            image = str(critique.extra.get("image", ""))
            if image and not is_url(image):
                if opt.images_dir is None:
                    result.images_unchecked += 1
                else:
                    if image not in images:
                        images[image] = image_problem(Path(opt.images_dir) / image)
                    if images[image] is not None:
                        raise RowError(*images[image])
            key = (critique.annotator, critique.image_id)
            if key in first_row:
                raise RowError("duplicate", f"annotator {key[0]!r} already rated image {key[1]!r} in "
                                            f"row {first_row[key]}; the first row is kept")
            first_row[key] = i
            critique.extra["record_sha256"] = record_sha256(row)
        except RowError as e:
            result.rejects.append(_reject(i, e.reason, e.detail, path, row))
            continue
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            # a schema error in the mapped record, or a value no check above foresaw
            result.rejects.append(_reject(i, "invalid record", f"{type(e).__name__}: {e}", path, row))
            continue
        result.critiques.append(critique)
    result.images_checked = sum(1 for v in images.values() if v is None)
    if result.images_unchecked:
        log.warning("%s: %d local image paths were not checked (no image folder given: pass "
                    "--images DIR to decode them at import)", path, result.images_unchecked)
    log.info("%s: imported %d, skipped %d %s", path, result.imported, result.skipped,
             result.summary()["skipped_by_reason"])
    return result
