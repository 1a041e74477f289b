"""Benchmarks the evaluation reads and writes.

* The project's own AesBench-style benchmark, built from the test split of AesMMIT-mini and its
  critiques (:func:`build_benchmark`): answers of technical / colour-light / composition
  questions come from the recorded degradation ground truth, the rest from the critiques'
  consensus; AesI references are the critiques' descriptions.
* AesBench's own layout (:func:`load_aesbench`, :func:`write_official_responses`,
  :func:`read_aesbench_responses`, :func:`load_aesbench_key`): one JSON object keyed by image
  file name; prompts built with AesBench's official strings (:func:`official_prompt`), replies
  written as its four official response files.
* Score datasets (``[{image, gt_score}]``, the AVA / PARA / TAD66K test-split layout).

Every reader raises ``ValueError`` naming the file, the image and the field of a bad entry.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from aes_lib.schema import (ATTRIBUTE_LABELS, GRADE_TO_LEVEL, BenchItem, Critique, consensus_grade,
                            ImageRecord, option_letters)

log = logging.getLogger(__name__)

BENCH_PROMPTS = "eval_bench_v1.yaml"
#: AesBench's official prompt strings (sent byte for byte on AesBench annotation files).
OFFICIAL_PROMPTS = "eval_aesbench_official_v1.yaml"
#: AesBench's per-image keys and the dimension each holds.
AESBENCH_KEYS: dict[str, str] = {"AesP_data": "AesP", "AesE_data": "AesE", "AesA1_data": "AesA",
                                 "AesI_data": "AesI"}
#: AesBench's response key of each dimension.
RESPONSE_KEYS: dict[str, str] = {"AesP": "AesP_response", "AesE": "AesE_response",
                                 "AesA": "AesA1_response", "AesI": "AesI_response"}
#: The response file AesBench's official scripts write for each dimension.
RESPONSE_FILES: dict[str, str] = {"AesP": "test_AesP.json", "AesE": "test_AesE.json",
                                  "AesA": "test_AesA1.json", "AesI": "test_AesI.json"}


def prompt_file(name: str) -> str:
    """Text of a versioned prompt file under ``aes_lib/prompts``."""
    return resources.files("aes_lib").joinpath("prompts", name).read_text(encoding="utf-8")


def prompt_yaml(name: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(prompt_file(name))


# --- the project's own benchmark ---------------------------------------------------------------

@dataclass
class Consensus:
    """What the critiques of one image agree on."""

    image_id: str
    n: int
    grade: str
    level: str
    mean_ratings: dict[str, float] = field(default_factory=dict)
    descriptions: list[str] = field(default_factory=list)
    annotator_kinds: list[str] = field(default_factory=list)


def consensus(critiques: Iterable[Critique]) -> dict[str, Consensus]:
    """Per image: the consensus grade (``schema.consensus_grade``), mean ratings, descriptions."""
    by_image: dict[str, list[Critique]] = {}
    for c in critiques:
        by_image.setdefault(c.image_id, []).append(c)
    out = {}
    for image_id, cs in by_image.items():
        grade = consensus_grade(c.grade for c in cs)
        ratings: dict[str, list[int]] = {}
        for c in cs:
            for attr, j in c.attributes.items():
                ratings.setdefault(attr, []).append(j["rating"])
        out[image_id] = Consensus(
            image_id=image_id, n=len(cs), grade=grade, level=GRADE_TO_LEVEL[grade],
            mean_ratings={a: sum(v) / len(v) for a, v in ratings.items()},
            descriptions=[c.description for c in cs if c.description.strip()],
            annotator_kinds=sorted({c.annotator_kind for c in cs}))
    return out


def _rating_band(mean: float, names: Sequence[str]) -> str | None:
    """good / fair / poor (or high / medium / low) from a mean 1-5 rating; None near a border."""
    if mean >= 3.67:
        return names[0]
    if mean <= 2.33:
        return names[2]
    if 2.67 <= mean <= 3.33:
        return names[1]
    return None  # too close to a band border to be a fair question


def _mcq(item_id: str, image: ImageRecord, dimension: str, attribute: str, qtype: str,
         question: str, correct: str, distractors: Sequence[str], source: str,
         rng: random.Random, shuffle: bool = True, annotator_kind: str = "") -> BenchItem:
    options = [correct] + [d for d in dict.fromkeys(distractors) if d != correct]
    if shuffle:
        rng.shuffle(options)
    else:  # an ordered scale (Yes/No, good/fair/poor, high/medium/low) keeps its natural order
        options = list(scale_order(options))
    return BenchItem(id=item_id, image=image.file, dimension=dimension, question=question,
                     options=options, answer=option_letters(len(options))[options.index(correct)],
                     attribute=attribute, qtype=qtype, source=source, image_id=image.id,
                     annotator_kind=annotator_kind)


_SCALES = (("Yes", "No"), ("good", "fair", "poor"), ("high", "medium", "low"))


def scale_order(options: Sequence[str]) -> Sequence[str]:
    for scale in _SCALES:
        if set(options) <= set(scale):
            return [o for o in scale if o in options]
    return options


def _source_of(images: Sequence[ImageRecord], source_field: str):
    if source_field == "auto":
        source_field = "source_package" if len({i.source_package for i in images}) > 1 else "category"
    if source_field not in ("source_package", "category", "source_photo", "degradation"):
        raise ValueError(f"source_field: {source_field!r} is not auto, source_package, category, "
                         "source_photo or degradation")
    return lambda rec: str(getattr(rec, source_field) or "unknown")


def build_benchmark(images: Sequence[ImageRecord], critiques: Iterable[Critique], seed: int = 0,
                    split: str = "test", source_field: str = "auto",
                    n_distractors: int = 3, shuffle_scales: bool = True) -> list[BenchItem]:
    """The AesBench-style items of the ``split`` images (see docs/evaluate.md for the rules).

    Options are shuffled per item (seeded); ``shuffle_scales=False`` keeps ordered scales
    (Yes/No, good/fair/poor, high/medium/low) in their natural order instead, which lets a
    model that always picks "A" profit from the data's skew towards Yes / good / high.

    Raises ``ValueError`` when the split holds no image or an image of it has no critique.
    """
    q = prompt_yaml(BENCH_PROMPTS)
    names, attr_of = q["degradation_names"], q["degradation_attribute"]
    chosen = [r for r in images if r.split == split]
    if not chosen:
        raise ValueError(f"build_benchmark: no image in split {split!r}")
    cons = consensus(critiques)
    missing = [r.id for r in chosen if r.id not in cons]
    if missing:
        raise ValueError(f"build_benchmark: image {missing[0]!r} (and {len(missing) - 1} more) of "
                         f"split {split!r} has no critique in the critiques file")
    source = _source_of(chosen, source_field)
    pool = {k: sorted({str(r.traits.get(k)) for r in images if isinstance(r.traits.get(k), str)})
            for k in ("subject", "mood", "palette")}
    items: list[BenchItem] = []
    for rec in sorted(chosen, key=lambda r: r.id):
        rng = random.Random(f"{seed}:{rec.id}")
        c, src, deg = cons[rec.id], source(rec), rec.degradation
        # answers from the critiques carry their annotators' kind (e.g. simulated)
        kind = c.annotator_kinds[0] if len(c.annotator_kinds) == 1 else "mixed"
        add = lambda *a, **k: items.append(_mcq(*a, source=src, rng=rng, **k))  # noqa: E731
        pid = lambda attr, qt: f"{rec.id}:AesP:{attr}:{qt}"  # noqa: E731
        # perception from the recorded degradation ground truth
        for attr in ("technical_quality", "color_light", "composition"):
            kinds = [k for k, a in attr_of.items() if a == attr]
            if deg in kinds:
                asked, yes = deg, True
            elif deg == "none":
                asked, yes = rng.choice(kinds), False
            else:
                continue  # this image's defect belongs to another attribute
            add(pid(attr, "yes-no"), rec, "AesP", attr, "yes-no",
                q["yes_no"].format(name=names[asked]), "Yes" if yes else "No", ["No" if yes else "Yes"],
                shuffle=shuffle_scales)
            none_opt = q["none_option"][attr]
            correct = names[deg] if deg in kinds else none_opt
            others = [names[k] for k in kinds if k != deg]
            rng.shuffle(others)
            distract = ([none_opt] if deg in kinds else []) + others
            add(pid(attr, "what"), rec, "AesP", attr, "what", q["what_problem"][attr], correct,
                distract[:n_distractors])
            if deg in kinds:
                why = [q["why_option"].format(name=names[k]) for k in attr_of if k != deg]
                rng.shuffle(why)
                add(pid(attr, "why"), rec, "AesP", attr, "why", q["why"][attr],
                    q["why_option"].format(name=names[deg]), why[:n_distractors])
        # perception and empathy "how" items from the consensus ratings
        for attr, dim in (("composition", "AesP"), ("content", "AesP"), ("vibe", "AesE")):
            band = _rating_band(c.mean_ratings.get(attr, 3.0), q["how_options"]) \
                if attr in c.mean_ratings else None
            if band:
                add(f"{rec.id}:{dim}:{attr}:how", rec, dim, attr, "how",
                    q["how_attribute"].format(label=ATTRIBUTE_LABELS[attr].lower()), band,
                    [o for o in q["how_options"] if o != band], shuffle=shuffle_scales,
                    annotator_kind=kind)
        if "interest" in c.mean_ratings:
            band = _rating_band(c.mean_ratings["interest"], q["interest_options"])
            if band:
                add(f"{rec.id}:AesE:interest:how", rec, "AesE", "interest", "how", q["interest_how"],
                    band, [o for o in q["interest_options"] if o != band], shuffle=shuffle_scales,
                    annotator_kind=kind)
        if "uniqueness" in c.mean_ratings:
            u = c.mean_ratings["uniqueness"]
            if u >= 3.67 or u <= 2.33:
                add(f"{rec.id}:AesE:uniqueness:yes-no", rec, "AesE", "uniqueness", "yes-no",
                    q["unique_yes_no"], "Yes" if u >= 3.67 else "No", ["No" if u >= 3.67 else "Yes"],
                    shuffle=shuffle_scales, annotator_kind=kind)
        # content / emotion "what" items from the photo's recorded traits
        for trait, dim, attr, key in (("subject", "AesP", "content", "content_what"),
                                      ("mood", "AesE", "emotion", "emotion_what"),
                                      ("palette", "AesP", "color_light", "palette_what")):
            value = rec.traits.get(trait)
            if not isinstance(value, str) or len(pool[trait]) < 2:
                continue
            others = [v for v in pool[trait] if v != value]
            rng.shuffle(others)
            suffix = "what-trait" if attr == "color_light" else "what"
            add(f"{rec.id}:{dim}:{attr}:{suffix}", rec, dim, attr, "what", q[key], value,
                others[:n_distractors])
        # assessment: the consensus level
        add(f"{rec.id}:AesA:level:how", rec, "AesA", "", "how", q["level"], c.level,
            [o for o in q["level_options"] if o != c.level], shuffle=shuffle_scales,
            annotator_kind=kind)
        # interpretation: the critiques' descriptions are the reference
        if c.descriptions:
            items.append(BenchItem(id=f"{rec.id}:AesI", image=rec.file, dimension="AesI",
                                   question=q["interpretation"], reference=" ".join(c.descriptions),
                                   source=src, image_id=rec.id, annotator_kind=kind))
    for it in items:
        it.validate()
    log.info("benchmark: %d items from %d %s images (%s)", len(items), len(chosen), split,
             ", ".join(f"{d} {sum(i.dimension == d for i in items)}" for d in ("AesP", "AesE", "AesA", "AesI")))
    return items


# --- AesBench's layout ---------------------------------------------------------------------------

_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])\s*[.):]\s*(.*?)\s*$")


def options_string(text: Any, where: str) -> str:
    """The Options field as the prompt carries it: a string as is; a list (not AesBench's own
    layout, accepted for convenience) joined with newlines."""
    if isinstance(text, str):
        return text
    if isinstance(text, list) and all(isinstance(x, str) for x in text):
        return "\n".join(text)
    raise ValueError(f"{where}: expected a newline-separated string of lettered options, "
                     f"got {type(text).__name__}")


def listed_lines(text: Any, where: str = "Options") -> list[str]:
    """The non-blank lines of an Options field, each with its letter, ends stripped."""
    return [line.strip() for line in options_string(text, where).splitlines() if line.strip()]


def parse_options(text: Any, where: str) -> list[str]:
    """``"A. Yes\\nB. No"`` (or a list of such lines) -> ``["Yes", "No"]``; letters must run A, B, ..."""
    lines = listed_lines(text, where)
    options = []
    for i, line in enumerate(lines):
        m = _OPTION_LINE.match(line)
        if not m or m.group(1) != chr(ord("A") + i) or not m.group(2):
            raise ValueError(f"{where}: option line {i + 1} {line!r} is not '{chr(ord('A') + i)}. <text>'")
        options.append(m.group(2))
    if len(options) < 2:
        raise ValueError(f"{where}: needs at least two lettered options, found {len(options)}")
    return options


def load_aesbench(path: str | Path, image_dir: str | Path | None = None,
                  check_images: bool = False) -> list[BenchItem]:
    """Items of an AesBench-layout annotation file (answers empty: the layout withholds them)."""
    path = Path(path)
    from aes_lib.io import read_json

    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON object keyed by image file name")
    items = []
    for image, entry in data.items():
        where = f"{path}: image {image!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with AesP_data/AesE_data/AesA1_data/AesI_data")
        if not any(k in entry for k in AESBENCH_KEYS):
            raise ValueError(f"{where}: none of the fields {', '.join(AESBENCH_KEYS)}")
        if check_images and image_dir is not None and not (Path(image_dir) / image).exists():
            raise FileNotFoundError(f"{where}: image file not found in {image_dir}")
        src = entry.get("source") or entry.get("Source") or ""
        for key, dim in AESBENCH_KEYS.items():
            if key not in entry:
                continue
            block, fwhere = entry[key], f"{where}: field '{key}'"
            if not isinstance(block, dict) or not isinstance(block.get("Question"), str) \
                    or not block["Question"].strip():
                raise ValueError(f"{fwhere}: expected {{Question, Options}} with a non-empty Question")
            options = [] if dim == "AesI" else parse_options(block.get("Options"), f"{fwhere}.Options")
            options_text = "" if dim == "AesI" else options_string(block["Options"], f"{fwhere}.Options")
            # Question and Options stay verbatim: official_prompt sends them byte for byte
            items.append(BenchItem(id=f"{image}:{dim}", image=image, dimension=dim,
                                   question=block["Question"], options=options,
                                   options_text=options_text,
                                   source=str(src), image_id=image,
                                   attribute=str(block.get("Attribute", "") or ""),
                                   qtype=str(block.get("Type", "") or "")))
    return items


@lru_cache(maxsize=None)
def _official_strings() -> tuple[str, dict[str, str]]:
    q = prompt_yaml(OFFICIAL_PROMPTS)
    return q["choose"], q["ending"]


def official_prompt(item: BenchItem) -> str:
    """AesBench's official prompt for an item of an AesBench file: ``Question + " Choose one from
    the following options:\\n" + Options + ending`` (AesP, AesE: "...option without explanation.",
    AesA1: "...option."), the bare ``Question`` for AesI; Question and Options verbatim."""
    if item.dimension == "AesI":
        return item.question
    choose, ending = _official_strings()
    return item.question + choose + item.options_text + ending[RESPONSE_KEYS[item.dimension][:-len("_response")]]


def listed_option(item: BenchItem, index: int) -> str:
    """Option ``index`` as the prompt lists it, letter included: the Options line of an AesBench
    item (ends stripped, e.g. ``"B.No"``), ``"B. No"`` for the project's items."""
    if item.options_text:
        return listed_lines(item.options_text)[index]
    return f"{option_letters(len(item.options))[index]}. {item.options[index]}"


def write_official_responses(folder: str | Path, items: Sequence[BenchItem],
                             responses: dict[str, str]) -> list[Path]:
    """AesBench's four response files in ``folder``: ``test_AesP.json``, ``test_AesE.json``,
    ``test_AesA1.json``, ``test_AesI.json``, each ``{image: {"<Dim>_response": reply}}`` in the
    items' order, serialised as the official scripts do (``json.dumps(answers, indent=4)``:
    ASCII with ``\\u`` escapes, no final newline). A dimension without replies gets no file, and
    an earlier run's file of that dimension is removed, so the folder never mixes two runs."""
    from aes_lib.io import atomic_write_bytes

    folder = Path(folder)
    written = []
    for dim, fname in RESPONSE_FILES.items():
        answers: dict[str, dict[str, str]] = {}
        for it in items:
            if it.dimension == dim and it.id in responses:
                answers[it.image] = {RESPONSE_KEYS[dim]: responses[it.id]}
        if answers:
            written.append(atomic_write_bytes(folder / fname,
                                              json.dumps(answers, indent=4).encode("ascii")))
        else:
            (folder / fname).unlink(missing_ok=True)
    return written


def response_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """The response files named by ``paths``: files as given; a folder gives the official files
    it holds (``test_AesP.json``, ``test_AesE.json``, ``test_AesA1.json``, ``test_AesI.json``)."""
    given = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not given:
        raise ValueError("no responses file given")
    files: list[Path] = []
    for p in map(Path, given):
        if p.is_dir():
            found = [p / f for f in RESPONSE_FILES.values() if (p / f).is_file()]
            if not found:
                raise FileNotFoundError(f"{p}: folder holds none of the response files "
                                        f"{', '.join(RESPONSE_FILES.values())}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: responses file or folder not found")
    return files


def read_aesbench_responses(paths: str | Path | Sequence[str | Path]) -> dict[str, str]:
    """Response files -> ``{item_id: text}`` (item ids as :func:`load_aesbench` makes them).

    ``paths``: one file, a folder of the official files (see :func:`response_files`) or a list
    of files and folders; the same image and field in two files is an error."""
    out: dict[str, str] = {}
    origin: dict[str, Path] = {}
    for path in response_files(paths):
        for item_id, text in _read_response_file(path).items():
            if item_id in out:
                image, dim = item_id.rsplit(":", 1)
                raise ValueError(f"{path}: image {image!r}: field {RESPONSE_KEYS[dim]!r} is also in "
                                 f"{origin[item_id]}")
            out[item_id], origin[item_id] = text, path
    return out


def _read_response_file(path: Path) -> dict[str, str]:
    from aes_lib.io import read_json

    data = read_json(path, unique_keys=True)   # an image given twice: an error, not "last wins"
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by image file name")
    inverse = {v: k for k, v in RESPONSE_KEYS.items()}
    out = {}
    for image, entry in data.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: image {image!r}: expected an object of *_response fields")
        for key, value in entry.items():
            if key not in inverse:
                raise ValueError(f"{path}: image {image!r}: field {key!r} is not one of "
                                 f"{', '.join(RESPONSE_KEYS.values())}")
            if not isinstance(value, str):
                raise ValueError(f"{path}: image {image!r}: field {key!r} must be a string")
            out[f"{image}:{inverse[key]}"] = value
    return out


def load_aesbench_key(path: str | Path, items: Sequence[BenchItem]) -> dict[str, str]:
    """Correct letters from a key file, as ``{item_id: letter}``.

    Per image and dimension it accepts ``"<X>_answer"``, ``"<X>_response"`` or
    ``"<X>_data": {"Answer": ...}`` (X = AesP, AesE, AesA1), holding a letter or an option's
    text; ``"AesI_reference"`` / ``"AesI_data": {"Reference"}`` set AesI references.
    """
    from aes_lib.evaluate.extract import extract_option
    from aes_lib.io import read_json

    data = read_json(path, unique_keys=True)   # an image given twice: an error, not "last wins"
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by image file name")
    by_id = {it.id: it for it in items}
    key: dict[str, str] = {}
    for image, entry in data.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: image {image!r}: expected an object")
        for prefix, dim in (("AesP", "AesP"), ("AesE", "AesE"), ("AesA1", "AesA"), ("AesI", "AesI")):
            item = by_id.get(f"{image}:{dim}")
            data_block = entry.get(f"{prefix}_data") if isinstance(entry.get(f"{prefix}_data"), dict) else {}
            if dim == "AesI":
                ref = entry.get("AesI_reference") or data_block.get("Reference")
                if ref and item is not None:
                    item.reference = str(ref)
                continue
            value = entry.get(f"{prefix}_answer", entry.get(f"{prefix}_response", data_block.get("Answer")))
            if value is None:
                continue
            if item is None:
                raise ValueError(f"{path}: image {image!r}: field '{prefix}': the benchmark has no "
                                 f"{dim} question for this image")
            letter = extract_option(str(value), item.options)
            if letter is None and item.options and item.options[0].startswith("\0"):
                raise ValueError(f"{path}: image {image!r}: field '{prefix}': answer {value!r} is not "
                                 "a letter; give the AesBench annotation file (--bench) so option "
                                 "texts can be matched")
            if letter is None:
                raise ValueError(f"{path}: image {image!r}: field '{prefix}': answer {value!r} names "
                                 f"none of the options {item.options}")
            key[item.id] = letter
    return key


# --- score datasets ----------------------------------------------------------------------------

def load_score_dataset(path: str | Path) -> list[dict[str, Any]]:
    """``[{image, gt_score}, ...]`` with every entry checked."""
    from aes_lib.io import read_json

    data = read_json(path)
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON list of {{image, gt_score}}")
    for i, row in enumerate(data):
        name = row.get("image", "?") if isinstance(row, dict) else "?"
        if not isinstance(row, dict) or not isinstance(row.get("image"), str) or not row["image"]:
            raise ValueError(f"{path}: entry {i}: field 'image' must be a non-empty string")
        score = row.get("gt_score")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError(f"{path}: image {name!r}: field 'gt_score' must be a number, got {score!r}")
    return [{"image": r["image"], "gt_score": float(r["gt_score"])} for r in data]


def detect_format(path: str | Path) -> str:
    """``benchmark`` (JSONL of BenchItems), ``aesbench`` (JSON object) or ``scores`` (JSON list)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: benchmark file not found")
    if path.suffix == ".jsonl":
        return "benchmark"
    with path.open("rb") as fh:
        raw = fh.read(4096)
    from aes_lib.io import decode_text

    head = decode_text(raw[:raw.rfind(b"\n") + 1] or raw[:64], str(path)).lstrip() if raw else ""
    if head.startswith("{"):
        return "aesbench"
    if head.startswith("["):
        return "scores"
    raise ValueError(f"{path}: not a benchmark.jsonl, an AesBench JSON object or a score-dataset list")


def mcq_prompt(item: BenchItem, template: str | None = None) -> str:
    """The multiple-choice prompt: AesBench's official one (:func:`official_prompt`) for items of
    an AesBench file; for the project's items, ``template`` (default ``eval_mcq_v1.txt``) filled
    with the question and ``A. <option>`` lines."""
    if item.options_text:
        return official_prompt(item)
    template = template or prompt_file("eval_mcq_v1.txt")
    lines = "\n".join(f"{letter}. {text}" for letter, text in zip(option_letters(len(item.options)),
                                                                   item.options))
    return template.format(question=item.question, options=lines).strip()


def write_benchmark(path: str | Path, items: Sequence[BenchItem]) -> int:
    from aes_lib.schema import write_jsonl

    return write_jsonl(path, items)


def read_benchmark(path: str | Path) -> list[BenchItem]:
    from aes_lib.schema import read_jsonl

    items = read_jsonl(path, BenchItem)
    if not items:
        raise ValueError(f"{path}: no benchmark items")
    seen = set()
    for it in items:
        if it.id in seen:
            raise ValueError(f"{path}: duplicate item id {it.id!r}")
        seen.add(it.id)
    return items


def dumps_options(options: Sequence[str]) -> str:
    """Options as AesBench writes them: ``"A. x\\nB. y"``."""
    return "\n".join(f"{l}. {o}" for l, o in zip(option_letters(len(options)), options))


__all__ = ["AESBENCH_KEYS", "OFFICIAL_PROMPTS", "RESPONSE_FILES", "RESPONSE_KEYS", "Consensus",
           "build_benchmark", "consensus", "detect_format", "dumps_options", "listed_option",
           "load_aesbench", "load_aesbench_key", "load_score_dataset", "mcq_prompt",
           "official_prompt", "options_string", "parse_options", "prompt_file", "prompt_yaml",
           "read_aesbench_responses", "read_benchmark", "response_files", "scale_order",
           "write_benchmark", "write_official_responses"]
