"""Does an instruction say what its critique says? A check that reads the finished item only.

An item contradicts its critique when its question takes for granted a judgment the critique's
rating of that attribute does not give ("Why do the colour and light of this photo fall short?"
about colour rated 5 of 5), or when its correct answer does ("because it is overexposed" there;
"no obvious technical problem" about technique rated 1). It reads the question and options as
they were written (templates or a model's reply), not the generator's bookkeeping, so it also
catches what an API model drafted. ``aes generate`` rejects such drafts and counts them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from aes_lib.schema import Critique

#: the premise words of the attribute "why" question, by the band they presume
PREMISE_BANDS = {"good": "high", "only average": "mid", "poor": "low"}
#: phrases by which a free-form question (an API model's) takes a weakness or a strength for
#: granted; a question that says "if any" / "if anything" takes nothing for granted
WEAKNESS_CUES = ("fall short", "falls short", "suffer", "not work", "doesn't work", "disappoint",
                 "is low", "is weak", "is poor", "so poor", "weakens", "let down", "lets down",
                 "hold back", "holds back", "what is wrong", "what's wrong", "the problem with",
                 "limits the", "problem does", "flaw")
STRENGTH_CUES = ("work so well", "works so well", "is excellent", "so strong", "so good",
                 "what makes the", "strength of")
NEUTRAL_CUES = ("if any", "if anything")


def _band(rating: int, t: dict) -> str:
    return t["bands"][int(rating)]


@lru_cache(maxsize=8)
def _why_patterns(templates_id: int, why: tuple[str, ...]) -> list[re.Pattern]:
    out = []
    for q in why:
        rx = re.escape(q).replace(re.escape("{attr}"), r"(?P<attr>.+?)").replace(
            re.escape("{premise}"), "(?P<premise>" + "|".join(map(re.escape, PREMISE_BANDS)) + ")")
        out.append(re.compile("^" + rx + "$", re.I))
    return out


def _defect_why_questions(t: dict) -> set[str]:
    return {q for qs in (t.get("defect_questions", {}).get("why") or {}).values() for q in qs}


def question_premise(question: str, t: dict) -> str | None:
    """The rating band the question takes for granted about its attribute ('low', 'mid', 'high'),
    or None when it asks without presuming."""
    q = question.strip()
    for rx in _why_patterns(id(t), tuple(t["questions"].get("why", ()))):
        m = rx.match(q)
        if m:
            return PREMISE_BANDS[m.group("premise").lower()]
    if q in _defect_why_questions(t):
        return "low"
    low = q.lower()
    if any(n in low for n in NEUTRAL_CUES):
        return None
    if any(cue in low for cue in WEAKNESS_CUES):
        return "low"
    if any(cue in low for cue in STRENGTH_CUES):
        return "high"
    return None


def _defect_names(t: dict) -> dict[str, str]:
    return {spec["name"].lower(): key for key, spec in (t.get("defects") or {}).items()}


def answer_claim(question: str, options: list[str], correct: int, attribute: str,
                 c: Critique, t: dict) -> str | None:
    """What the correct answer says about the attribute: 'defect' (it names a flaw), 'clean' (it
    says there is none), a band ('low' / 'mid' / 'high') for rating and word answers, or None."""
    text = options[correct].strip()
    low = text.lower().rstrip(".")
    names = _defect_names(t)
    if sorted(o.lower() for o in options) == ["no", "yes"]:
        asked = next((n for n in names if n in question.lower()), None)
        if asked is not None:
            return "defect" if low == "yes" else None
        claim = next((b for b, lab in t["band_labels"].items() if re.search(
            rf"\b{re.escape(lab.lower())}\b", question.lower())), None)
        if claim is None:
            return None
        if low == "yes":
            return claim
        return None  # "No" rules out one band, it does not name one
    if low.removeprefix("because it is ").strip() in names:
        return "defect"
    if t.get("none_option") and low == t["none_option"].get(attribute, "\0").lower():
        return "clean"
    labels = {lab.lower(): b for b, lab in t["band_labels"].items()}
    if low in labels:
        return labels[low]
    word = low.removeprefix("because its ").split(" is ")[-1].strip()
    given = ((c.attributes.get(attribute) or {}).get("word") or "").strip().lower()
    if word and word == given:
        return None  # the annotator's own word: it says what they said
    for b, words in (t["words"].get(attribute) or {}).items():
        if word in (w.lower() for w in words):
            return b
    return None


def contradiction(question: str, options: list[str], correct: int, attribute: str, c: Critique,
                  t: dict) -> str | None:
    """Why a multiple-choice item about ``attribute`` contradicts critique ``c``; None if it does
    not (or is about no rated attribute)."""
    j = c.attributes.get(attribute)
    if not attribute or not j or not options or not 0 <= correct < len(options):
        return None
    b = _band(j["rating"], t)
    is_yes_no = sorted(o.lower() for o in options) == ["no", "yes"]
    premise = None if is_yes_no else question_premise(question, t)
    if premise is not None and premise != b:
        return (f"the question takes a {premise} {attribute} for granted; the critique rates it "
                f"{j['rating']} ({b})")
    claim = answer_claim(question, options, correct, attribute, c, t)
    bad = {"defect": b == "high", "clean": b == "low"}.get(claim, claim is not None and claim != b)
    if bad:
        what = {"defect": "names a flaw of", "clean": "says nothing is wrong with"}.get(
            claim, f"calls {claim} the")
        return (f"the answer {options[correct]!r} {what} {attribute}; the critique rates it "
                f"{j['rating']} ({b})")
    return None


def question_of(ins: Any) -> str:
    """The question line of a finished multiple-choice instruction."""
    return ins.conversations[0]["value"].removeprefix("<image>\n").split("\n")[0]


def instruction_contradiction(ins: Any, c: Critique, t: dict) -> str | None:
    """:func:`contradiction` for a finished :class:`~aes_lib.schema.Instruction`."""
    if not ins.options or not ins.answer or not ins.attribute:
        return None
    return contradiction(question_of(ins), ins.options, ord(ins.answer) - ord("A"), ins.attribute, c, t)
