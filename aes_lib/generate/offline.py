"""The offline backend: refine and assemble from the structured critique with templates.

Deterministic (same critique and seed, same output), no network. Question wording varies;
answer wording is fixed per type, so the tiny model has something learnable. Every sentence
states only what the annotator gave: the grade, the attribute ratings and words, the text.
"""

from __future__ import annotations

import hashlib
import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from aes_lib.schema import (EMPATHY_ATTRIBUTES, GRADE_TO_LEVEL, PERCEPTION_ATTRIBUTES, QTYPES,
                            Critique)

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
BAND_JUDGMENT = {"high": "positive", "mid": "neutral", "low": "negative"}
WHY_PREMISE = {"high": "good", "mid": "only average", "low": "poor"}


@lru_cache(maxsize=8)
def load_templates(version: str = "offline_v1") -> dict[str, Any]:
    import yaml

    path = PROMPTS_DIR / f"{version}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: offline template file not found (prompt version {version!r})")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("bands", "band_labels", "level_options", "attribute_labels", "words", "questions",
                "answers", "mcq_suffix", "mcq_instruction"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    return data


def rng_for(seed: int, *parts: str) -> random.Random:
    digest = hashlib.sha256("\0".join([str(seed), *parts]).encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def band(rating: int, t: dict) -> str:
    return t["bands"][int(rating)]


_TAG = re.compile(r"<[^>]+>")
_GREETING = re.compile(r"^\s*(hi|hello|hey|howdy|dear|greetings)\b[^.!?]{0,40}[.!?,]\s*", re.I)


def clean_text(text: str) -> str:
    """Strip HTML remnants, greetings and run-on whitespace; sentence-case; end with a stop."""
    text = _TAG.sub(" ", text or "")
    text = text.replace("&nbsp;", " ").replace("&amp;", "&").replace("&quot;", '"')
    text = _GREETING.sub("", text)
    text = re.sub(r"([!?.])\1+", r"\1", text)
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return ""
    text = re.sub(r"([.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    text = text[0].upper() + text[1:]
    if text[-1] not in ".!?":
        text += "."
    return text


def refine(c: Critique, t: dict) -> dict[str, Any]:
    """The refined critique: the annotator's cleaned text plus a sentence stating the grade."""
    level = GRADE_TO_LEVEL[c.grade]
    tail = t["answers"]["description_tail"].format(grade=c.grade, level=level)
    body = clean_text(c.description)
    if not body:
        items = _items(c, t, ("high", "mid", "low"))
        body = clean_text("Its " + ", its ".join(items)) if items else ""
    return {"critique_id": c.id, "image_id": c.image_id, "grade": c.grade, "level": level,
            "text": f"{body} {tail}".strip(), "suggestion": clean_text(c.suggestion),
            "attributes": {a: dict(j) for a, j in c.attributes.items()},
            "annotator_kind": c.annotator_kind}


def word_for(attr: str, judgment: dict, t: dict, rng: random.Random) -> str:
    word = (judgment.get("word") or "").strip()
    return word if word else rng.choice(t["words"][attr][band(judgment["rating"], t)])


def free_word(judgment: dict, t: dict) -> str:
    """The annotator's word, or the plain band label (good / average / poor) when none was given:
    free text never puts a word in the annotator's mouth."""
    return (judgment.get("word") or "").strip() or t["band_labels"][band(judgment["rating"], t)].lower()


def _items(c: Critique, t: dict, bands: tuple[str, ...]) -> list[str]:
    out = []
    for attr, j in c.attributes.items():
        if band(j["rating"], t) in bands:
            word = free_word(j, t)
            out.append(t["answers"]["item"].format(word=word, attr=t["attribute_labels"][attr]))
    return out


def mcq_prompt(question: str, options: list[str], t: dict) -> str:
    letters = "ABCDEFGH"
    lines = [question, t["mcq_suffix"], *(f"{letters[i]}. {o}" for i, o in enumerate(options)),
             t["mcq_instruction"]]
    return "\n".join(lines)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def attribute_mcq(attr: str, judgment: dict, qtype: str, t: dict, rng: random.Random
                  ) -> tuple[str, list[str], int, str]:
    """(question, options, correct index, judgment band) for one attribute and question form."""
    label = t["attribute_labels"][attr]
    b = band(judgment["rating"], t)
    q = rng.choice(t["questions"][qtype])
    if qtype == "yes-no":
        claim_band = b if rng.random() < 0.5 else rng.choice([x for x in ("high", "mid", "low") if x != b])
        claim = t["band_labels"][claim_band].lower()
        return q.format(attr=label, claim=claim), ["Yes", "No"], 0 if claim_band == b else 1, b
    if qtype == "how":
        options = [t["band_labels"][x] for x in ("high", "mid", "low")]
        return q.format(attr=label), options, ("high", "mid", "low").index(b), b
    word = word_for(attr, judgment, t, rng)
    others = [w for x in ("high", "mid", "low") if x != b for w in t["words"][attr][x]
              if w.lower() != word.lower()]
    distractors = rng.sample(sorted(set(others)), k=min(3, len(set(others))))
    texts = [word, *distractors]
    if qtype == "why":
        q = q.format(attr=label, premise=WHY_PREMISE[b])
        texts = [t["answers"]["why"].format(attr=label, word=w) for w in texts]
    else:
        q = q.format(attr=label)
        texts = [_cap(w) for w in texts]
    order = list(range(len(texts)))
    rng.shuffle(order)
    return q, [texts[i] for i in order], order.index(0), b


def assemble(c: Critique, refined: dict, t: dict, seed: int, n_perception: int, n_empathy: int,
             open_types: tuple[str, ...]) -> list[dict[str, Any]]:
    """Instruction drafts for one critique: dicts with type, qtype, attribute, turns, options,
    correct index and the judgment band the correct answer expresses."""
    rng = rng_for(seed, c.id)
    drafts: list[dict[str, Any]] = []
    for dim, attrs, n in (("perception", PERCEPTION_ATTRIBUTES, n_perception),
                          ("empathy", EMPATHY_ATTRIBUTES, n_empathy)):
        present = [a for a in attrs if a in c.attributes]
        chosen = rng.sample(present, k=min(n, len(present)))
        start = rng.randrange(len(QTYPES))
        for k, attr in enumerate(chosen):
            qtype = QTYPES[(start + k) % len(QTYPES)]
            q, options, correct, b = attribute_mcq(attr, c.attributes[attr], qtype, t, rng)
            drafts.append({"slot": f"{dim[0]}{k}", "type": f"{dim}_mcq", "qtype": qtype,
                           "attribute": attr, "question": q, "options": options,
                           "correct": correct, "judgment": BAND_JUDGMENT[b]})
    level = refined["level"]
    q = t["questions"]
    if "level" in open_types:
        options = list(t["level_options"])
        drafts.append({"slot": "lvl", "type": "level_mcq", "qtype": "level", "attribute": "",
                       "question": rng.choice(q["level"]), "options": options,
                       "correct": [o.lower() for o in options].index(level), "judgment": level})
    a = t["answers"]
    if "description" in open_types:
        drafts.append(_open("desc", "description", rng.choice(q["description"]), refined["text"]))
    if "interpretation" in open_types:
        good, bad = _items(c, t, ("high",)), _items(c, t, ("low",))
        parts = [a["interpretation_head"].format(level=level)]
        parts += [a["interpretation_good"].format(items=", ".join(good))] if good else []
        parts += [a["interpretation_bad"].format(items=", ".join(bad))] if bad else []
        if not good and not bad:
            parts.append(a["interpretation_none"])
        drafts.append(_open("interp", "interpretation", rng.choice(q["interpretation"]), " ".join(parts)))
    if "suggestion" in open_types:
        drafts.append(_open("sugg", "suggestion", rng.choice(q["suggestion"]), _suggestion(c, refined, t)))
    if "conversation" in open_types and c.attributes:
        ranked = sorted(c.attributes, key=lambda x: (-c.attributes[x]["rating"], x))
        label = t["attribute_labels"]
        best, worst = ranked[0], ranked[-1]
        turns = [(rng.choice(q["level"]), a["level"].format(Level=_cap(level))),
                 (rng.choice(q["conversation"]["best"]),
                  a["best"].format(attr=label[best], word=free_word(c.attributes[best], t)))]
        if c.attributes[worst]["rating"] < c.attributes[best]["rating"]:
            turns.append((rng.choice(q["conversation"]["worst"]),
                          a["worst"].format(attr=label[worst], word=free_word(c.attributes[worst], t))))
        drafts.append({"slot": "conv", "type": "conversation", "qtype": "multi-turn", "attribute": "",
                       "turns": turns})
    return drafts


def _open(slot: str, typ: str, question: str, answer: str) -> dict[str, Any]:
    return {"slot": slot, "type": typ, "qtype": "open", "attribute": "", "turns": [(question, answer)]}


def _suggestion(c: Critique, refined: dict, t: dict) -> str:
    if refined["suggestion"]:
        return refined["suggestion"]
    for b, key in (("low", "suggestion_fallback"), ("mid", "suggestion_mid")):
        weak = sorted((j["rating"], attr) for attr, j in c.attributes.items() if band(j["rating"], t) == b)
        if weak:
            return " ".join(
                t["answers"][key].format(attr=t["attribute_labels"][attr], word=free_word(c.attributes[attr], t))
                for _, attr in weak[:2])
    return t["answers"]["suggestion_strong"] if c.attributes else ""
