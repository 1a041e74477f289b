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
                "answers"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    if "mcq_template" in data:  # v2+: the multiple-choice layout is a prompt file both stages read
        tpath = PROMPTS_DIR / data["mcq_template"]
        if not tpath.exists():
            raise FileNotFoundError(f"{path}: mcq_template {data['mcq_template']!r} not found in {PROMPTS_DIR}")
        data["mcq_template_text"] = tpath.read_text(encoding="utf-8")
    elif "mcq_suffix" not in data or "mcq_instruction" not in data:
        raise ValueError(f"{path}: needs mcq_template, or mcq_suffix and mcq_instruction")
    if data.setdefault("option_order", "fixed") not in ("fixed", "shuffled"):
        raise ValueError(f"{path}: option_order must be 'fixed' or 'shuffled', got {data['option_order']!r}")
    if "defects" in data:
        for key in ("negations", "clean_cues", "none_option", "defect_why_option", "defect_questions"):
            if key not in data:
                raise ValueError(f"{path}: has 'defects' but misses key {key!r}")
        for name, spec in data["defects"].items():
            if not {"name", "attribute", "cues"} <= set(spec) or spec["attribute"] not in data["none_option"]:
                raise ValueError(f"{path}: defects.{name} needs name, cues and an attribute of none_option")
    return data


def rng_for(seed: int, *parts: str) -> random.Random:
    digest = hashlib.sha256("\0".join([str(seed), *parts]).encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def band(rating: int, t: dict) -> str:
    return t["bands"][int(rating)]


_TAG = re.compile(r"<[^>]+>")
# A salutation at the start of a critique: the greeting word, "there", up to two capitalised name
# words ("Hi Jason:", "Hey Leonard", "Hi there Judith", "Dear Freda -"), and the punctuation after.
# A second name word counts only when punctuation follows it ("Hi Sophie Nice work" keeps "Nice").
_GREETING = re.compile(
    r"^\s*(?:hi|hello|hey|howdy|dear|greetings|good (?:morning|afternoon|evening))\b"
    r"(?:\s+there\b)?(?:[\s,]+(?-i:[A-Z][\w'\u2019-]*)(?:\s+(?-i:[A-Z][\w'\u2019-]*)(?=\s*[,:;.!?\u2013\u2014-]))?)?"
    r"[\s,:;.!?\u2013\u2014-]*", re.I)
# What may follow the salutation before the critique proper: "and thank you for ...", "and welcome
# to ...", "Thanks for choosing me ...": dropped up to the end of their sentence.
_PLEASANTRY = re.compile(r"^(?:and\s+)?(?:thanks?\b|thank you\b|welcome\b)[^.!?]*[.!?]+\s*", re.I)


# A bare address at the start: "Leonard, you are ...", "Joe -- It's ...", "Anna Isabel, I keep ...":
# one or two capitalised words then a comma or a dash, when the first is not a word sentences start
# with ("Overall, ...", "Technically, ...", adverbs in -ly).
_ADDRESS = re.compile(r"^([A-Z][a-z'\u2019]+)(?: [A-Z][a-z'\u2019]+)?\s*(?:,|--?|\u2013|\u2014)\s*")
_NOT_NAMES = frozenset("""
again also amazing anyway awesome basically beautiful brilliant but certainly clearly compositionally
congratulation congratulations cool definitely excellent fantastic finally fine first firstly generally
good great hello here however hmm honestly impressive indeed initially interesting lovely nice now oh ok
okay otherwise overall perfect personally please really second secondly so sorry still stunning subject
technically then there thus unfortunately well what wonderful wow yes
""".split())


def strip_greeting(text: str) -> str:
    """``text`` without a salutation or a bare address at its start (and the thanks after it)."""
    m = _GREETING.match(text)
    if m and m.group(0).strip():
        return _PLEASANTRY.sub("", text[m.end():], count=1)
    m = _ADDRESS.match(text)
    if m and m.group(1).lower() not in _NOT_NAMES and not m.group(1).lower().endswith("ly"):
        return _PLEASANTRY.sub("", text[m.end():], count=1)
    return text


def clean_text(text: str) -> str:
    """Strip HTML remnants, greetings and run-on whitespace; sentence-case; end with a stop."""
    text = _TAG.sub(" ", text or "")
    text = text.replace("&nbsp;", " ").replace("&amp;", "&").replace("&quot;", '"')
    text = strip_greeting(text.strip())
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
    """The human turn of a multiple-choice item: the template file's layout (v2+, the same file the
    evaluation reads) or v1's suffix and instruction lines."""
    letters = "ABCDEFGH"
    listed = [f"{letters[i]}. {o}" for i, o in enumerate(options)]
    if "mcq_template_text" in t:
        return t["mcq_template_text"].format(question=question, options="\n".join(listed)).strip()
    return "\n".join([question, t["mcq_suffix"], *listed, t["mcq_instruction"]])


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
             open_types: tuple[str, ...], n_defect: int = 0) -> list[dict[str, Any]]:
    """Instruction drafts for one critique: dicts with type, qtype, attribute, turns, options,
    correct index and the judgment band the correct answer expresses; plus up to ``n_defect``
    items about the defects the critique names (templates v2+, own random stream)."""
    rng = rng_for(seed, c.id)
    drafts: list[dict[str, Any]] = defect_mcqs(c, t, rng_for(seed, c.id, "defects"), n_defect)
    for dim, attrs, n in (("perception", PERCEPTION_ATTRIBUTES, n_perception),
                          ("empathy", EMPATHY_ATTRIBUTES, n_empathy)):
        present = [a for a in attrs if a in c.attributes]
        chosen = rng.sample(present, k=min(n, len(present)))
        start = rng.randrange(len(QTYPES))
        for k, attr in enumerate(chosen):
            qtype = QTYPES[(start + k) % len(QTYPES)]
            if qtype in ("what", "why") and not (c.attributes[attr].get("word") or "").strip():
                qtype = "how"  # no word of the annotator's to answer with: ask for the rating
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
    if t["option_order"] == "shuffled":
        for d in drafts:
            if "options" in d:
                shuffle_options(d, rng_for(seed, c.id, "layout", d["slot"]))
    return drafts


def shuffle_options(draft: dict[str, Any], rng: random.Random) -> None:
    """Put a multiple-choice draft's options in a random order (every order equally likely, as the
    benchmark's), keeping ``correct`` on the same option text."""
    answer = draft["options"][draft["correct"]]
    options = list(draft["options"])
    rng.shuffle(options)
    draft["options"], draft["correct"] = options, options.index(answer)


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


# --- items about the concrete defects a critique names (prompt v2+) ---------------------------

DEFECT_ATTRIBUTES = ("technical_quality", "color_light", "composition")


def _cue_found(text: str, cue: str, negations: list[str]) -> bool:
    """``cue`` occurs in ``text`` at a word start, not negated by one of the 3 words before it."""
    start = 0
    while (i := text.find(cue, start)) >= 0:
        start = i + 1
        if i > 0 and text[i - 1].isalnum():
            continue
        window = " " + " ".join(re.sub(r"[^a-z' -]", " ", text[:i]).split()[-3:]) + " "
        if not any(f" {n} " in window for n in negations):
            return True
    return False


def critique_defects(c: Critique, t: dict) -> tuple[list[str], bool]:
    """(defect keys the critique names, in order of first mention; whether it says the image is
    technically clean). Read from the critique's description; when that names no defect and says
    nothing about technique, from the word of a low-rated technical / colour / composition
    attribute. Never from the dataset's degradation labels (``c.extra`` is not read)."""
    if "defects" not in t:
        return [], False
    text = clean_text(c.description).lower()
    negs = t["negations"]
    found = []
    for key, spec in t["defects"].items():
        hits = [text.find(cue) for cue in spec["cues"] if _cue_found(text, cue, negs)]
        if hits:
            found.append((min(hits), key))
    named = [k for _, k in sorted(found)]
    clean = not named and any(_cue_found(text, cue, negs) for cue in t["clean_cues"])
    if not named and not clean:
        for attr in DEFECT_ATTRIBUTES:
            j = c.attributes.get(attr)
            word = ((j or {}).get("word") or "").strip().lower()
            if not word or band(j["rating"], t) != "low":
                continue
            named += [k for k, spec in t["defects"].items() if spec["attribute"] == attr
                      and k not in named and any(_cue_found(word, cue, negs) for cue in spec["cues"])]
    return named, clean


def _none_ok(attr: str, c: Critique, clean: bool, t: dict) -> bool:
    """The critique names no defect; does it say this attribute has no problem? (Never where it
    rates the attribute low.)"""
    j = c.attributes.get(attr)
    if not j or band(j["rating"], t) == "low":
        return False
    if clean and attr != "composition":
        return True
    if band(j["rating"], t) != "high":
        return False
    word = (j.get("word") or "").strip().lower()
    weak = {w.lower() for b in ("low", "mid") for w in t["words"][attr][b]}
    return word not in weak


def defect_rating_ok(attr: str, c: Critique, t: dict, qtype: str) -> bool:
    """May a defect the critique's text names for ``attr`` be asked about, given its rating? A
    question presuming the weakness ("why ... fall short?") only where the attribute is rated low;
    a defect as the answer ("Does it look blurred? Yes") only where it is not rated high: a reviewer
    who rates the colour 5 of 5 and mentions "blown" has not called the colour poor."""
    b = band(c.attributes[attr]["rating"], t) if attr in c.attributes else "high"
    return b == "low" if qtype == "why" else b != "high"


def defect_answer(d: dict[str, Any], c: Critique, t: dict) -> str | None:
    """The option text a defect draft's critique supports (None: the critique supports no answer)."""
    named, clean = critique_defects(c, t)
    attr, defs = d["attribute"], t["defects"]
    mine = [k for k in named if defs[k]["attribute"] == attr]
    if mine and not defect_rating_ok(attr, c, t, d["qtype"]):
        return None
    if d["qtype"] == "yes-no":
        if d["asked"] in named:
            return "Yes"
        return "No" if mine or (not named and _none_ok(attr, c, clean, t)) else None
    if mine:
        name = defs[mine[0]]["name"]
        return t["defect_why_option"].format(name=name) if d["qtype"] == "why" else name
    if d["qtype"] == "what" and not named and _none_ok(attr, c, clean, t):
        return t["none_option"][attr]
    return None


def defect_mcqs(c: Critique, t: dict, rng: random.Random, limit: int) -> list[dict[str, Any]]:
    """Perception multiple-choice drafts about the defects the critique names (or about their
    absence, when it says so): yes-no, what and why items, at most ``limit``, answers from the
    critique, distractors the other defects' names."""
    if "defects" not in t or limit <= 0:
        return []
    named, clean = critique_defects(c, t)
    defs, dq = t["defects"], t["defect_questions"]
    drafts: list[dict[str, Any]] = []

    def add(attr: str, qtype: str, question: str, options: list[str], correct: str, asked: str = ""):
        if qtype != "yes-no":
            options = list(dict.fromkeys([correct, *options]))[:4]
            rng.shuffle(options)
        drafts.append({"type": "perception_mcq", "qtype": qtype, "attribute": attr, "question": question,
                       "options": options, "correct": options.index(correct), "judgment": "",
                       "defect": True, "asked": asked})

    for attr in DEFECT_ATTRIBUTES:
        if attr not in c.attributes:
            continue
        kinds = [k for k, s in defs.items() if s["attribute"] == attr]
        mine = [k for k in named if k in kinds]
        if not mine and (named or not _none_ok(attr, c, clean, t)):
            continue  # a defect elsewhere, or nothing said about this attribute
        if mine and not defect_rating_ok(attr, c, t, "what"):
            continue  # the text names a defect, the rating calls the attribute good: ask nothing
        others = [k for k in kinds if k not in named]
        rng.shuffle(others)
        if mine and (not others or rng.random() < 0.5):
            asked, yes = mine[0], "Yes"
        else:
            asked, yes = others[0], "No"
        add(attr, "yes-no", rng.choice(dq["yes-no"]).format(name=defs[asked]["name"]), ["Yes", "No"], yes, asked)
        none_opt = t["none_option"][attr]
        correct = defs[mine[0]]["name"] if mine else none_opt
        add(attr, "what", rng.choice(dq["what"][attr]), ([none_opt] if mine else [])
            + [defs[k]["name"] for k in others], correct)
        if mine and defect_rating_ok(attr, c, t, "why"):
            rest = [k for k in defs if k not in named]
            rng.shuffle(rest)
            why = [t["defect_why_option"].format(name=defs[k]["name"]) for k in rest]
            add(attr, "why", rng.choice(dq["why"][attr]),
                why, t["defect_why_option"].format(name=defs[mine[0]]["name"]))
    if len(drafts) > limit:
        drafts = [drafts[i] for i in sorted(rng.sample(range(len(drafts)), limit))]
    for k, d in enumerate(drafts):
        d["slot"] = f"d{k}"
    return drafts
