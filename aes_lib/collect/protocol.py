"""The progressive-question protocol, loaded from a versioned YAML file.

A protocol lists the levels an annotator walks through: an overall grade (five grades mapped to
the benchmark's three levels), attribute ratings with an optional word, then a free-text
description and suggestion. :meth:`Protocol.validate_step` checks one level's answers, so the
annotation tool, the importers and the tests share the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from aes_lib.schema import ATTRIBUTES, GRADE_TO_LEVEL, GRADES, LEVELS, RATING_MAX, RATING_MIN

#: The order of the progressive levels.
STEPS: tuple[str, ...] = ("grade", "attributes", "text")


@dataclass
class GradeOption:
    key: str
    label: str
    level: str
    shortcut: str = ""


@dataclass
class AttributeQuestion:
    key: str
    group: str
    label: str
    question: str
    required: bool = True
    word_required: bool = False


@dataclass
class TextQuestion:
    question: str
    required: bool = False
    min_words: int = 0


@dataclass
class Protocol:
    name: str
    version: str
    grade_question: str
    grades: list[GradeOption]
    attributes: list[AttributeQuestion]
    description: TextQuestion
    suggestion: TextQuestion
    rating_labels: dict[int, str] = field(default_factory=dict)
    flag_reasons: list[str] = field(default_factory=list)
    grade_required: bool = True
    source: str = ""

    @property
    def id(self) -> str:
        """``name@version``: what the store records for every critique."""
        return f"{self.name}@{self.version}"

    @property
    def grade_keys(self) -> list[str]:
        return [g.key for g in self.grades]

    @property
    def attribute_keys(self) -> list[str]:
        return [a.key for a in self.attributes]

    def grade_level(self, grade: str) -> str:
        for g in self.grades:
            if g.key == grade:
                return g.level
        raise ValueError(f"protocol {self.id}: unknown grade {grade!r}")

    def grade_for_shortcut(self, key: str) -> str | None:
        return next((g.key for g in self.grades if g.shortcut and g.shortcut == key), None)

    def rows(self) -> list[dict[str, Any]]:
        """The protocol as a table: one row per question, in the order an annotator meets them."""
        grades = ", ".join(f"{g.label} ({g.level})" for g in self.grades)
        rows = [{"level": 1, "question": self.grade_question, "answer": grades,
                 "required": self.grade_required}]
        rows += [{"level": 2, "question": f"[{a.group}] {a.question}",
                  "answer": "rating 1-5 + word" + ("" if a.word_required else " (optional)"),
                  "required": a.required} for a in self.attributes]
        for q, name in ((self.description, "description"), (self.suggestion, "suggestion")):
            rows.append({"level": 3, "question": q.question,
                         "answer": f"free text ({name}, at least {q.min_words} words)",
                         "required": q.required})
        return rows

    # --- validation of one level's answers --------------------------------------------------
    def validate_step(self, step: str, answers: dict[str, Any]) -> list[str]:
        """Problems with the answers of ``step`` (one of :data:`STEPS`); empty when valid."""
        if step == "grade":
            grade = answers.get("grade")
            if grade is None:
                return ["choose an overall grade"] if self.grade_required else []
            return [] if grade in self.grade_keys else [f"unknown grade {grade!r}"]
        if step == "attributes":
            problems = []
            given = answers.get("attributes") or {}
            for a in self.attributes:
                judgment = given.get(a.key) or {}
                rating = judgment.get("rating")
                if rating is None:
                    if a.required:
                        problems.append(f"rate {a.label}")
                elif not (isinstance(rating, int) and RATING_MIN <= rating <= RATING_MAX):
                    problems.append(f"{a.label}: rating must be {RATING_MIN}-{RATING_MAX}")
                if a.word_required and not (judgment.get("word") or "").strip():
                    problems.append(f"{a.label}: give a word")
            return problems
        if step == "text":
            return (_text_problems("description", answers.get("description", ""), self.description)
                    + _text_problems("suggestion", answers.get("suggestion", ""), self.suggestion))
        raise ValueError(f"unknown protocol step {step!r} (expected one of {', '.join(STEPS)})")

    def validate_answers(self, answers: dict[str, Any]) -> list[str]:
        """Problems across every level."""
        return [p for step in STEPS for p in self.validate_step(step, answers)]


def _text_problems(name: str, text: str, q: TextQuestion) -> list[str]:
    n = len((text or "").split())
    if n == 0:
        return [f"write a {name}"] if q.required else []
    if n < q.min_words:
        return [f"the {name} needs at least {q.min_words} words (has {n})"]
    return []


def _req(data: dict, key: str, where: str) -> Any:
    if key not in data:
        raise ValueError(f"{where}: missing key '{key}'")
    return data[key]


def protocol_from_dict(data: dict[str, Any], source: str = "<dict>") -> Protocol:
    """Build and check a protocol; errors name the file and the key."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a protocol must be a mapping")
    grade = _req(data, "grade", source)
    options = _req(grade, "options", f"{source}: grade")
    grades = [GradeOption(key=str(_req(o, "key", f"{source}: grade.options[{i}]")),
                          label=str(o.get("label", o["key"])),
                          level=str(o.get("level", GRADE_TO_LEVEL.get(o["key"], ""))),
                          shortcut=str(o.get("shortcut", "")))
              for i, o in enumerate(options)]
    keys = [g.key for g in grades]
    if sorted(keys) != sorted(GRADES):
        raise ValueError(f"{source}: grade.options keys must be the five grades {list(GRADES)}, got {keys}")
    for g in grades:
        if g.level not in LEVELS:
            raise ValueError(f"{source}: grade {g.key!r}: level {g.level!r} is not one of {list(LEVELS)}")
    shortcuts = [g.shortcut for g in grades if g.shortcut]
    if len(set(shortcuts)) != len(shortcuts):
        raise ValueError(f"{source}: grade shortcuts must be unique, got {shortcuts}")
    attrs = []
    for i, a in enumerate(_req(data, "attributes", source)):
        where = f"{source}: attributes[{i}]"
        key = str(_req(a, "key", where))
        if key not in ATTRIBUTES:
            raise ValueError(f"{where}: key {key!r} is not one of {list(ATTRIBUTES)}")
        attrs.append(AttributeQuestion(key=key, group=str(a.get("group", "")),
                                       label=str(a.get("label", key)),
                                       question=str(a.get("question", key)),
                                       required=bool(a.get("required", True)),
                                       word_required=bool(a.get("word_required", False))))
    if len({a.key for a in attrs}) != len(attrs):
        raise ValueError(f"{source}: attribute keys must be unique")
    desc, sugg = data.get("description") or {}, data.get("suggestion") or {}
    return Protocol(
        name=str(_req(data, "name", source)), version=str(_req(data, "version", source)),
        grade_question=str(grade.get("question", "Overall grade?")), grades=grades,
        grade_required=bool(grade.get("required", True)), attributes=attrs,
        description=TextQuestion(str(desc.get("question", "Describe the image.")),
                                 bool(desc.get("required", True)), int(desc.get("min_words", 0))),
        suggestion=TextQuestion(str(sugg.get("question", "Suggestion?")),
                                bool(sugg.get("required", False)), int(sugg.get("min_words", 0))),
        rating_labels={int(k): str(v) for k, v in (data.get("rating_labels") or {}).items()},
        flag_reasons=[str(r) for r in data.get("flag_reasons") or ["broken image", "inappropriate content"]],
        source=source,
    )


def load_protocol(name_or_path: str | Path = "default") -> Protocol:
    """Load a protocol by name (a file in ``aes_lib/protocols/``) or by path to a YAML file."""
    from aes_lib.io import read_text

    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise FileNotFoundError(f"{p}: protocol file not found")
        text, source = read_text(p), str(p)
    else:
        res = resources.files("aes_lib") / "protocols" / f"{name_or_path}.yaml"
        if not res.is_file():
            raise FileNotFoundError(f"protocol {name_or_path!r}: no file aes_lib/protocols/{name_or_path}.yaml")
        text, source = res.read_text(encoding="utf-8"), f"aes_lib/protocols/{name_or_path}.yaml"
    from aes_lib.io import load_yaml

    data = load_yaml(text, source)   # invalid YAML, alias bombs, duplicate keys: errors naming it
    return protocol_from_dict(data, source)
