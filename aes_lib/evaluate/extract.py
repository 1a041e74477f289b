"""Robust option extraction: which lettered option does a free-text answer pick?

Handles what models actually write: a bare letter ("B"), a letter with punctuation ("(B)",
"B.", "B) high"), a sentence ("The answer is B", "I would choose option C"), the option's text
("high", "The image is blurred."), or both ("B. Yes"). An answer that names no option, or names
two different options equally, gives ``None``: the caller counts it wrong and lists it.
"""

from __future__ import annotations

import re

__all__ = ["extract_option", "normalise"]

_LETTER_PATTERNS = (
    # the whole answer is a letter, maybe wrapped, maybe followed by punctuation and the text
    r"^\s*[(\[\"'*]*([A-Z])[)\]\"'*]*\s*(?:[.:)\-,]|$)",
    # "answer is B", "Answer: (B)", "option C", "I choose D", "the correct one is A"
    r"(?i:\b(?:answer|option|choice|choose|select|pick|correct(?: one)?))\s*"
    r"(?i:is|would be|will be|:|=)?\s*(?i:option\s*)?[(\[\"'*]*([A-Z])[)\]\"'*]*(?=[\s.,:;!)]|$)",
    # "B is correct", "(B) is the answer"
    r"[(\[]?\b([A-Z])[)\]]?\s+(?i:is\s+(?:the\s+)?(?:correct|right|best|answer))",
    # lower-case letter after a keyword, only at the very end: "the answer is b."
    r"(?i:\b(?:answer|option|choice)\s*(?:is|:)?)\s*\(?([a-z])\)?[.!]?\s*$",
)


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces."""
    return " ".join(re.sub(r"[^a-z0-9&]+", " ", text.lower()).split())


def _text_match(answer: str, options: list[str]) -> int | None:
    """Index of the option whose text the answer contains (longest match wins; ties -> None)."""
    ans = f" {normalise(answer)} "
    hits = []
    for i, opt in enumerate(options):
        norm = normalise(opt)
        if norm and f" {norm} " in ans:
            hits.append((len(norm), i))
    if not hits:
        return None
    # an option contained in a longer matching option ("blurred" in "not blurred") yields to it
    norms = {i: normalise(options[i]) for _, i in hits}
    kept = [i for _, i in hits
            if not any(j != i and f" {norms[i]} " in f" {norms[j]} " for _, j in hits)]
    return kept[0] if len(kept) == 1 else None


def extract_option(answer: str, options: list[str]) -> str | None:
    """The option letter an answer picks, or ``None`` when it cannot be told.

    ``options`` are the option texts without letters, in order (A, B, ...). Order of evidence:
    an explicit letter pattern, then the exact option text, then a lettered prefix of the text.
    """
    if not isinstance(answer, str) or not answer.strip():
        return None
    letters = [chr(ord("A") + i) for i in range(len(options))]
    text = answer.strip()
    # 1. the answer is exactly an option text (e.g. "Yes", "high")
    exact = [i for i, o in enumerate(options) if normalise(o) == normalise(text)]
    if len(exact) == 1:
        return letters[exact[0]]
    # a lone letter in any case ("b", "(c).")
    bare = re.fullmatch(r"[\s(\[\"'*]*([A-Za-z])[\s)\]\"'*.:]*", text)
    if bare and bare.group(1).upper() in letters:
        return bare.group(1).upper()
    # hedged between letters ("B or C", "A and B"): no single pick
    hedge = re.search(r"\b([A-Z])\)?\s*(?:,|or|and|/)\s*\(?([A-Z])\b", text)
    if hedge and hedge.group(1) != hedge.group(2) and {hedge.group(1), hedge.group(2)} <= set(letters):
        return None
    # 2. an explicit letter
    for pattern in _LETTER_PATTERNS:
        found = {m.upper() for m in re.findall(pattern, text)} & set(letters)
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    # 3. the option's text inside a sentence
    idx = _text_match(text, options)
    if idx is not None:
        return letters[idx]
    return None
