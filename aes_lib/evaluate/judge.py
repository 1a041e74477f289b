"""AesI judges: 0-2 scores for relevance, precision and completeness, and their mean (overall).

* :class:`ProxyOverlapJudge` (name ``proxy-overlap``): the offline default. Content-word overlap
  with the reference critique, NOT a language-model judgement; its numbers are labelled with its
  name everywhere and are never presented as a GPT judge's. Short, question-repeating and
  copy-paste answers are scored down (see the class), so they rank below a real critique.
* :class:`ApiJudge` (name ``api:<model>``): an OpenAI-compatible model with the versioned rubric
  ``aes_lib/prompts/judge_rubric_v1.txt``, replying with JSON that is validated (re-asked when
  malformed) through :mod:`aes_lib.client`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

from aes_lib.evaluate.bench import prompt_file

CRITERIA = ("relevance", "precision", "completeness")
RUBRIC = "judge_rubric_v1.txt"
LEXICON = "judge_proxy_lexicon_v1.txt"
_STOP = set("""a an the and or but of to in on at for with by from as is are was were be been being
it its this that these those there here i you he she we they me my your our their his her them
not no so very too more most less least than then also just can could would should will may might
do does did has have had which who whom what when where why how all any some such into over under
about up down out off again only own same both each few other""".split())


def content_words(text: str) -> set[str]:
    """Lower-case words of three letters or more, stop words removed, a plural 's' dropped."""
    words = re.findall(r"[a-z]+", text.lower())
    return {w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith("ss") else w
            for w in words if len(w) >= 3 and w not in _STOP}


def _overall(scores: dict[str, float]) -> dict[str, float]:
    return {**scores, "overall": sum(scores[c] for c in CRITERIA) / len(CRITERIA)}


def _jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class ProxyOverlapJudge:
    """Offline proxy over content words (stop words and the question's own words removed):
    relevance = share of answer words on topic (in the reference or the aesthetics lexicon),
    precision = share of answer words found in the reference, completeness = share of reference
    words found in the answer; each scaled to 0-2.

    It cannot be won by saying little or saying the same thing everywhere: relevance and
    precision are multiplied by a brevity factor (the square root of answer words /
    ``min(reference words, FULL_LENGTH)``, at most 1), so one on-topic word is not a perfect
    answer; the question's words do not count, so repeating the question scores 0; and an answer whose content words are
    given to ``k`` of the ``n`` judged items has every score multiplied by ``1 - (k - 1) / n``
    (the same sentence to every image keeps ``1 / n`` of its score). ``k`` counts the answers
    whose content words overlap this one's by at least ``NEAR_SAME`` (Jaccard), not only exact
    copies: a model that repeats one sentence with a word changed here and there is scored as
    repeating it, so the score does not jump when a few of its answers change by a word."""

    name = "proxy-overlap"
    #: answer content words needed for the full relevance and precision (fewer when the
    #: reference itself is shorter)
    FULL_LENGTH = 12
    #: content-word overlap (Jaccard) at which two answers count as the same answer
    NEAR_SAME = 0.8

    def __init__(self):
        lex = prompt_file(LEXICON)
        self.lexicon = content_words(" ".join(l for l in lex.splitlines() if not l.startswith("#")))

    def score_one(self, answer: str, reference: str, question: str = "") -> dict[str, float]:
        a = content_words(answer) - content_words(question)
        r = content_words(reference)
        if not a or not r:
            return _overall({c: 0.0 for c in CRITERIA})
        hit = a & r
        brevity = min(1.0, (len(a) / min(len(r), self.FULL_LENGTH)) ** 0.5)
        return _overall({"relevance": round(2 * brevity * len(a & (r | self.lexicon)) / len(a), 4),
                         "precision": round(2 * brevity * len(hit) / len(a), 4),
                         "completeness": round(2 * len(hit) / len(r), 4)})

    def near_copies(self, keys: Sequence[frozenset]) -> dict[frozenset, int]:
        """For each distinct answer (its content words), how many answers are it or nearly it."""
        counts = {k: keys.count(k) for k in set(keys)}
        return {k: sum(n for other, n in counts.items() if _jaccard(k, other) >= self.NEAR_SAME)
                for k in counts}

    def score(self, items: Sequence[Any], answers: Sequence[str], progress: bool = False) -> list[dict[str, float]]:
        keys = [frozenset(content_words(a) - content_words(getattr(it, "question", "")))
                for it, a in zip(items, answers)]
        given = self.near_copies(keys)
        out = []
        for it, ans, key in zip(items, answers, keys):
            scores = self.score_one(ans, it.reference, getattr(it, "question", ""))
            share = 1.0 - (given[key] - 1) / len(keys)
            out.append(_overall({c: round(scores[c] * share, 4) for c in CRITERIA}))
        return out


def repeated_answers(preds: Sequence[dict[str, Any]], min_share: float = 0.5,
                     min_count: int = 3) -> list[dict[str, Any]]:
    """Free-text (AesI) answers given word for word to many different items: the same text for
    at least ``min_share`` of a dimension's items (and ``min_count`` of them). A model that says
    one sentence to every image is not interpreting images, whatever a judge scores it."""
    flags = []
    by_dim: dict[str, list[str]] = {}
    for p in preds:
        if p.get("dimension") == "AesI":
            by_dim.setdefault("AesI", []).append(" ".join(str(p.get("response", "")).lower().split()))
    for dim, texts in by_dim.items():
        counts: dict[str, int] = {}
        for t in texts:
            counts[t] = counts.get(t, 0) + 1
        for text, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            if n >= min_count and n >= min_share * len(texts):
                flags.append({"dimension": dim, "response": text, "count": n, "of": len(texts)})
    return flags


def parse_judgement(text: str) -> dict[str, float]:
    """The rubric's JSON reply -> scores; raises ValueError (the client re-asks) when malformed."""
    m = re.search(r"\{.*\}", text, re.S)
    if not m:
        raise ValueError("judge reply holds no JSON object")
    data = json.loads(m.group(0))
    out = {}
    for c in CRITERIA:
        v = data.get(c)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 2:
            raise ValueError(f"judge reply: {c!r} must be a number 0-2, got {v!r}")
        out[c] = float(v)
    return _overall(out)


class ApiJudge:
    """The rubric judge through an OpenAI-compatible model (``client_cfg``: ClientConfig keys)."""

    def __init__(self, client_cfg: dict[str, Any]):
        from aes_lib.client import ClientConfig

        self.cfg = ClientConfig.from_dict({"temperature": 0.0, "max_tokens": 128, **client_cfg})
        self.name = f"api:{self.cfg.model}"
        self.template = prompt_file(RUBRIC)

    def score(self, items: Sequence[Any], answers: Sequence[str], progress: bool = False) -> list[dict[str, float]]:
        from aes_lib.client import ChatRequest, LLMClient

        reqs = [ChatRequest(key=f"judge:{it.id}", validate=parse_judgement, prompt_version=RUBRIC,
                            messages=[{"role": "user", "content": self.template.format(
                                question=it.question, reference=it.reference, answer=ans)}])
                for it, ans in zip(items, answers)]
        out = []
        for it, res in zip(items, LLMClient(self.cfg).run(reqs, progress=progress)):
            if not res.ok:
                raise ValueError(f"judge failed on item {it.id!r} after the client's retries: {res.error}")
            out.append(res.parsed)
        return out


def make_judge(name: str = "proxy-overlap", client_cfg: dict[str, Any] | None = None):
    """``proxy-overlap`` or ``api`` (then ``client_cfg`` names the judge model)."""
    if name == "proxy-overlap":
        return ProxyOverlapJudge()
    if name == "api":
        if not client_cfg or not client_cfg.get("model"):
            raise ValueError("judge 'api' needs a judge model (judge_model / --judge-model)")
        return ApiJudge(client_cfg)
    raise ValueError(f"judge: {name!r} is not proxy-overlap or api")
