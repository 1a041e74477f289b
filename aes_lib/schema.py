"""The records every stage reads and writes, with JSON round-trips and validation.

Stages hand over through files on disk; these dataclasses are the shape of those files.
Every ``from_dict`` validates and raises :class:`SchemaError` naming the record and the field,
so a bad line in a 400K-row file is found by its id, not by a stack trace.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, TypeVar

# --- vocabulary shared by every stage -------------------------------------------------------

#: Five-level overall grade of the progressive questions, best first.
GRADES: tuple[str, ...] = ("excellent", "good", "fair", "poor", "bad")
#: AesBench's three aesthetic levels, best first.
LEVELS: tuple[str, ...] = ("high", "medium", "low")
#: How a five-level grade maps onto the benchmark's three levels.
GRADE_TO_LEVEL: dict[str, str] = {
    "excellent": "high", "good": "high", "fair": "medium", "poor": "low", "bad": "low",
}
#: Numeric value of each grade (5 = excellent ... 1 = bad), used for scores and agreement.
GRADE_SCORE: dict[str, int] = {g: 5 - i for i, g in enumerate(GRADES)}
SCORE_GRADE: dict[int, str] = {s: g for g, s in GRADE_SCORE.items()}


def consensus_grade(grades: Iterable[str]) -> str:
    """The one definition of an image's consensus grade, used by every stage: the grade of the
    mean grade score, rounded half up (good, poor, poor -> 2.67 -> fair)."""
    scores = [GRADE_SCORE[g] for g in grades]
    if not scores:
        raise ValueError("consensus_grade: no grades given")
    return SCORE_GRADE[min(5, max(1, math.floor(sum(scores) / len(scores) + 0.5)))]

#: AesBench perception (AesP) attributes.
PERCEPTION_ATTRIBUTES: tuple[str, ...] = ("technical_quality", "color_light", "composition", "content")
#: AesBench empathy (AesE) attributes.
EMPATHY_ATTRIBUTES: tuple[str, ...] = ("emotion", "interest", "uniqueness", "vibe")
ATTRIBUTES: tuple[str, ...] = PERCEPTION_ATTRIBUTES + EMPATHY_ATTRIBUTES
#: Human-readable attribute names, as the benchmark writes them.
ATTRIBUTE_LABELS: dict[str, str] = {
    "technical_quality": "Technical Quality", "color_light": "Color & Light",
    "composition": "Composition", "content": "Content", "emotion": "Emotion",
    "interest": "Interest", "uniqueness": "Uniqueness", "vibe": "Vibe",
}
#: Attribute ratings are integers on this closed range (1 = very poor ... 5 = excellent).
RATING_MIN, RATING_MAX = 1, 5

#: Benchmark dimensions and the question forms of multiple-choice items.
DIMENSIONS: tuple[str, ...] = ("AesP", "AesE", "AesA", "AesI")
QTYPES: tuple[str, ...] = ("yes-no", "what", "how", "why")

#: Instruction types the generation stage assembles.
INSTRUCTION_TYPES: tuple[str, ...] = (
    "perception_mcq", "empathy_mcq", "level_mcq", "description", "interpretation",
    "suggestion", "conversation",
)
#: Kinds of degradation AesMMIT-mini applies to its source photos ("none" = the original).
DEGRADATIONS: tuple[str, ...] = (
    "none", "overexposed", "underexposed", "blur", "noise", "jpeg", "color_cast",
    "desaturated", "tilted", "bad_crop",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Who wrote a critique: a person, a simulated annotator, or an imported dataset.
ANNOTATOR_KINDS: tuple[str, ...] = ("human", "simulated", "imported")


class SchemaError(ValueError):
    """A record that does not fit its schema; the message names the record and the field."""

    def __init__(self, record: str, field_name: str, problem: str):
        self.record, self.field_name, self.problem = record, field_name, problem
        super().__init__(f"{record}: field '{field_name}': {problem}")


T = TypeVar("T", bound="Record")


@dataclass
class Record:
    """Base class: dict/JSON round-trips with validation."""

    KIND: ClassVar[str] = "record"

    def label(self) -> str:
        return f"{self.KIND} {getattr(self, 'id', '?')!r}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls: type[T], data: Any, where: str = "") -> T:
        name = f"{cls.KIND} {data.get('id', '?')!r}" if isinstance(data, dict) else cls.KIND
        if where:
            name = f"{where}: {name}"
        if not isinstance(data, dict):
            raise SchemaError(name, "*", f"expected a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SchemaError(name, unknown[0], "unknown field")
        missing = [n for n, f in known.items() if n not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise SchemaError(name, missing[0], "missing")
        obj = cls(**data)
        obj.validate(name)
        return obj

    @classmethod
    def from_json(cls: type[T], text: str, where: str = "") -> T:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SchemaError(where or cls.KIND, "*", f"not valid JSON ({e})") from None
        except RecursionError:
            raise SchemaError(where or cls.KIND, "*", "JSON nested too deeply to read") from None
        return cls.from_dict(data, where)

    # subclasses override; ``name`` is the label used in errors
    def validate(self, name: str | None = None) -> None:
        pass


def _check(cond: bool, name: str, field_name: str, problem: str) -> None:
    if not cond:
        raise SchemaError(name, field_name, problem)


def _check_str(obj: Any, name: str, field_name: str, allow_empty: bool = False) -> None:
    value = getattr(obj, field_name)
    _check(isinstance(value, str), name, field_name, f"expected a string, got {type(value).__name__}")
    if not allow_empty:
        _check(value.strip() != "", name, field_name, "must not be empty")


def _check_choice(obj: Any, name: str, field_name: str, choices: Iterable[str]) -> None:
    value = getattr(obj, field_name)
    choices = tuple(choices)
    _check(value in choices, name, field_name, f"{value!r} is not one of {', '.join(choices)}")


# --- records ----------------------------------------------------------------------------------

@dataclass
class ImageRecord(Record):
    """One image of a dataset (AesMMIT-mini or an imported one)."""

    KIND: ClassVar[str] = "image"
    id: str
    file: str                      # path relative to the dataset's root folder
    source_photo: str              # id of the photo the image derives from (split unit)
    split: str                     # train | val | test
    sha256: str = ""
    width: int = 0
    height: int = 0
    source_package: str = ""       # e.g. scikit-image
    source_name: str = ""          # the package's own name for the photo
    licence: str = ""
    title: str = ""                # what the photo shows, one line
    category: str = ""             # e.g. portrait, animal, object, scene, science, texture
    degradation: str = "none"
    strength: float = 0.0          # 0 = none; 1 = the strongest variant the dataset builds
    params: dict[str, Any] = field(default_factory=dict)  # exact degradation parameters
    # hand-written facts about the source photo (subject, mood, palette, composition, base_grade):
    # the ground truth simulated annotators and the benchmark draw on
    traits: dict[str, Any] = field(default_factory=dict)

    def validate(self, name: str | None = None) -> None:
        name = name or self.label()
        for f in ("id", "file", "source_photo"):
            _check_str(self, name, f)
        _check_choice(self, name, "split", SPLITS)
        _check(isinstance(self.degradation, str) and self.degradation != "", name, "degradation",
               "must be a non-empty string")
        _check(isinstance(self.strength, (int, float)) and 0.0 <= self.strength <= 1.0, name,
               "strength", f"must be a number in [0, 1], got {self.strength!r}")
        _check(not Path(self.file).is_absolute() and ".." not in Path(self.file).parts, name,
               "file", f"must be a relative path inside the dataset folder, got {self.file!r}")
        for f in ("width", "height"):
            _check(isinstance(getattr(self, f), int) and getattr(self, f) >= 0, name, f,
                   "must be a non-negative integer")


@dataclass
class Critique(Record):
    """One annotator's answers to the progressive questions for one image."""

    KIND: ClassVar[str] = "critique"
    id: str
    image_id: str
    annotator: str
    annotator_kind: str            # human | simulated | imported
    protocol_version: str
    grade: str                     # one of GRADES
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)  # attr -> {rating, word}
    description: str = ""
    suggestion: str = ""
    seconds_spent: float = 0.0
    created_at: str = ""           # ISO 8601, UTC
    source: str = ""               # dataset / store the critique came from
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def level(self) -> str:
        return GRADE_TO_LEVEL[self.grade]

    def rating(self, attribute: str) -> int | None:
        judgment = self.attributes.get(attribute)
        return None if judgment is None else judgment.get("rating")

    def validate(self, name: str | None = None) -> None:
        name = name or self.label()
        for f in ("id", "image_id", "annotator", "protocol_version"):
            _check_str(self, name, f)
        _check_choice(self, name, "annotator_kind", ANNOTATOR_KINDS)
        _check_choice(self, name, "grade", GRADES)
        _check(isinstance(self.attributes, dict), name, "attributes", "must be an object")
        for attr, judgment in self.attributes.items():
            fname = f"attributes.{attr}"
            _check(isinstance(judgment, dict), name, fname, "must be an object {rating, word}")
            rating = judgment.get("rating")
            _check(isinstance(rating, int) and not isinstance(rating, bool)
                   and RATING_MIN <= rating <= RATING_MAX, name, f"{fname}.rating",
                   f"must be an integer {RATING_MIN}-{RATING_MAX}, got {rating!r}")
            word = judgment.get("word")
            _check(word is None or isinstance(word, str), name, f"{fname}.word", "must be a string")
        _check_str(self, name, "description", allow_empty=True)
        _check_str(self, name, "suggestion", allow_empty=True)


@dataclass
class Instruction(Record):
    """One instruction-tuning sample in LLaVA's layout plus its provenance."""

    KIND: ClassVar[str] = "instruction"
    id: str
    image_id: str
    image: str                     # image path as the training data will reference it
    type: str                      # one of INSTRUCTION_TYPES
    qtype: str                     # yes-no | what | how | why | level | open | multi-turn
    conversations: list[dict[str, str]]  # [{from: human|gpt, value}], <image> in the first turn
    split: str = "train"
    attribute: str = ""            # for multiple-choice items
    options: list[str] = field(default_factory=list)
    answer: str = ""               # correct option letter for multiple-choice items
    critique_ids: list[str] = field(default_factory=list)
    prompt_version: str = ""
    generator: str = ""            # offline | openai:<model>
    annotator_kind: str = ""       # carried over from the critiques (simulated / human / imported)

    def validate(self, name: str | None = None) -> None:
        name = name or self.label()
        for f in ("id", "image_id", "image", "type", "qtype"):
            _check_str(self, name, f)
        _check_choice(self, name, "split", SPLITS)
        conv = self.conversations
        _check(isinstance(conv, list) and len(conv) >= 2, name, "conversations",
               "must be a list of at least two turns")
        for i, turn in enumerate(conv):
            _check(isinstance(turn, dict) and set(turn) == {"from", "value"}, name,
                   f"conversations[{i}]", "each turn must be {from, value}")
            expected = "human" if i % 2 == 0 else "gpt"
            _check(turn["from"] == expected, name, f"conversations[{i}].from",
                   f"expected {expected!r} (turns alternate, human first)")
            _check(isinstance(turn["value"], str) and turn["value"].strip() != "", name,
                   f"conversations[{i}].value", "must be a non-empty string")
        _check("<image>" in conv[0]["value"], name, "conversations[0].value",
               "the first human turn must hold the <image> token")
        _check(sum(t["value"].count("<image>") for t in conv) == 1, name, "conversations",
               "exactly one <image> token is allowed")
        if self.options:
            _check(len(set(self.options)) == len(self.options), name, "options",
                   "options must be unique")
            letters = [chr(ord("A") + i) for i in range(len(self.options))]
            _check(self.answer in letters, name, "answer",
                   f"must be one of {letters} for {len(self.options)} options, got {self.answer!r}")


@dataclass
class BenchItem(Record):
    """One benchmark question: multiple choice (AesP, AesE, AesA) or open (AesI)."""

    KIND: ClassVar[str] = "benchmark item"
    id: str
    image: str                     # image path (relative to the benchmark's image folder)
    dimension: str                 # AesP | AesE | AesA | AesI
    question: str
    options: list[str] = field(default_factory=list)   # option texts, without letters
    answer: str = ""               # correct letter ("" when withheld or for AesI)
    attribute: str = ""
    qtype: str = ""
    source: str = ""               # image source group (AesBench: NIs / AIs / AGIs)
    reference: str = ""            # reference critique for AesI
    image_id: str = ""
    annotator_kind: str = ""       # kind of the critiques the answer / reference came from
                                   # (simulated / human / imported / mixed); "" when not from critiques
    options_text: str = ""         # AesBench files: the Options string as given, sent verbatim

    def validate(self, name: str | None = None) -> None:
        name = name or self.label()
        for f in ("id", "image", "question"):
            _check_str(self, name, f)
        _check_choice(self, name, "dimension", DIMENSIONS)
        if self.dimension == "AesI":
            _check(not self.options, name, "options", "AesI items are open questions: no options")
        else:
            _check(len(self.options) >= 2, name, "options", "needs at least two options")
            _check(len(set(self.options)) == len(self.options), name, "options", "must be unique")
            letters = [chr(ord("A") + i) for i in range(len(self.options))]
            _check(self.answer == "" or self.answer in letters, name, "answer",
                   f"must be one of {letters} (or empty when withheld), got {self.answer!r}")


def option_letters(n: int) -> list[str]:
    """``['A', 'B', ...]`` for n options."""
    return [chr(ord("A") + i) for i in range(n)]


# --- files of records -------------------------------------------------------------------------

def write_jsonl(path: str | Path, records: Iterable[Record | dict]) -> int:
    """Write records one JSON object per line, atomically (a crash leaves the old file)."""
    from aes_lib.io import atomic_write_text

    lines = [r.to_json() if isinstance(r, Record) else json.dumps(r, ensure_ascii=False, sort_keys=True)
             for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def iter_jsonl(path: str | Path, cls: type[T]) -> Iterator[T]:
    """Read and validate records; errors name the file, the line and the field."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    from aes_lib.io import decode_text

    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = decode_text(raw, f"{path}:{lineno}")   # not UTF-8: an error naming the file
            if line.strip():
                yield cls.from_json(line, where=f"{path}:{lineno}")


def read_jsonl(path: str | Path, cls: type[T]) -> list[T]:
    return list(iter_jsonl(path, cls))


def manifest_records(data: Any, where: str) -> list[ImageRecord]:
    """The validated image records of a loaded ``data/manifest.json`` object; errors name the
    manifest, the record (``images[i]``) and the field, and a repeated id is an error."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise SchemaError(where, "images", "expected an object with a list 'images'")
    records, seen = [], set()
    for i, item in enumerate(data["images"]):
        record = ImageRecord.from_dict(item, where=f"{where}: images[{i}]")
        if record.id in seen:
            raise SchemaError(f"{where}: images[{i}]", "id", f"duplicate id {record.id!r}")
        seen.add(record.id)
        records.append(record)
    return records


def read_manifest(path: str | Path) -> list[ImageRecord]:
    """The image records of a ``data/manifest.json`` file (the one reader every stage uses)."""
    from aes_lib.io import read_json

    return manifest_records(read_json(path), str(path))
