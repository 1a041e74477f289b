"""Aggregation: per-image consensus, attribute distributions, agreement, characteristic words."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from aes_lib.schema import (ATTRIBUTES, GRADE_SCORE, GRADE_TO_LEVEL, GRADES, RATING_MAX, RATING_MIN, Critique,
                            consensus_grade)

CONSENSUS_COLUMNS = ("image_id", "n_critiques", "consensus_grade", "consensus_level",
                     "mean_grade_score") + tuple(f"mean_{a}" for a in ATTRIBUTES)
_STOP = set("""a an the and or but of to in on at for with by from as is are was were be been it its
this that these those there their they them we you your i me my our he she his her not no so very
too than then just more most less can could would should will what which who while into over under
about also only out up down if all any some one two much such""".split())


def consensus_rows(critiques: Iterable[Critique]) -> list[dict[str, Any]]:
    """One row per image: the consensus grade is the grade of the rounded mean grade score."""
    by_image: dict[str, list[Critique]] = defaultdict(list)
    for c in critiques:
        by_image[c.image_id].append(c)
    rows = []
    for image_id in sorted(by_image):
        cs = by_image[image_id]
        mean = sum(GRADE_SCORE[c.grade] for c in cs) / len(cs)
        grade = consensus_grade(c.grade for c in cs)
        row: dict[str, Any] = {"image_id": image_id, "n_critiques": len(cs), "consensus_grade": grade,
                               "consensus_level": GRADE_TO_LEVEL[grade], "mean_grade_score": round(mean, 4)}
        for attr in ATTRIBUTES:
            values = [c.rating(attr) for c in cs if c.rating(attr) is not None]
            row[f"mean_{attr}"] = round(sum(values) / len(values), 4) if values else ""
        rows.append(row)
    return rows


def write_consensus_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    import csv
    import io

    from aes_lib.io import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CONSENSUS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def ordinal_alpha(critiques: list[Critique], value_of) -> float | None:
    """Krippendorff's alpha (ordinal) over annotators x images; ``None`` when undefined."""
    import krippendorff
    import numpy as np

    annotators = sorted({c.annotator for c in critiques})
    images = sorted({c.image_id for c in critiques})
    if len(annotators) < 2 or not images:
        return None
    a_idx = {a: i for i, a in enumerate(annotators)}
    i_idx = {m: i for i, m in enumerate(images)}
    data = np.full((len(annotators), len(images)), np.nan)
    for c in critiques:
        v = value_of(c)
        if v is not None:
            data[a_idx[c.annotator], i_idx[c.image_id]] = v
    pairable = (np.sum(~np.isnan(data), axis=0) >= 2).sum()
    values = np.unique(data[~np.isnan(data)])
    if pairable == 0 or len(values) < 2:
        return None
    alpha = float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal",
                                     value_domain=list(range(RATING_MIN, RATING_MAX + 1))))
    return None if math.isnan(alpha) else round(alpha, 4)


def _tokens(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z'-]+", text.lower()) if w not in _STOP and len(w) > 2]


def _attribute_tokens(c: Critique, attr: str) -> list[str]:
    """The words a critique gives for one attribute: its one-word answer, plus, for imported
    critiques that carry per-attribute texts (PCCD), the words of the texts mapped to ``attr``."""
    from .importers import PCCD_TO_ATTRIBUTE

    word = (c.attributes.get(attr, {}).get("word") or "").strip().lower()
    tokens = [word] if word else []
    texts = c.extra.get("attribute_texts") if isinstance(c.extra, dict) else None
    if isinstance(texts, dict):
        for f in PCCD_TO_ATTRIBUTE.get(attr, ()):
            tokens += _tokens(str(texts.get(f, "")))
    return tokens


def characteristic_words(critiques: list[Critique], top: int = 10) -> dict[str, list[list]]:
    """Per attribute, the words that most distinguish low-rated (1-2) from high-rated (4-5) answers.

    Words come from each critique's answer for that attribute (the one-word answer; for PCCD
    imports also the attribute's critique text). Score = smoothed log-odds of the word among
    low-rated answers against high-rated ones: positive = said of low ratings, negative = of high
    ones; the ``top // 2`` strongest of each sign are kept. When one side is empty the most
    frequent words are listed with their share of answers instead.
    """
    out: dict[str, list[list]] = {}
    for attr in ATTRIBUTES:
        low, high, freq = Counter(), Counter(), Counter()
        n_answers = 0
        for c in critiques:
            r = c.rating(attr)
            if r is None:
                continue
            toks = set(_attribute_tokens(c, attr))
            n_answers += 1
            freq.update(toks)
            if r <= 2:
                low.update(toks)
            elif r >= 4:
                high.update(toks)
        if low and high:
            n_low, n_high, v = sum(low.values()), sum(high.values()), len(set(low) | set(high))
            scored = [[w, round(math.log((low[w] + 0.5) / (n_low + 0.5 * v))
                                - math.log((high[w] + 0.5) / (n_high + 0.5 * v)), 4)]
                      for w in set(low) | set(high) if low[w] + high[w] >= 2]
            pos = sorted((x for x in scored if x[1] > 0), key=lambda x: (-x[1], x[0]))[: top // 2]
            neg = sorted((x for x in scored if x[1] < 0), key=lambda x: (x[1], x[0]))[: top - top // 2]
            out[attr] = pos + neg[::-1]
        else:
            out[attr] = [[w, round(n / max(n_answers, 1), 4)]
                         for w, n in sorted(freq.items(), key=lambda x: (-x[1], x[0]))[:top]]
    return out


def words_table(stats: dict[str, Any]) -> list[dict[str, str]]:
    """``characteristic_words`` as rows: the words said of low and of high ratings per attribute."""
    rows = []
    for attr, words in stats["characteristic_words"].items():
        rows.append({"attribute": attr,
                     "said of low ratings": ", ".join(w for w, score in words if score > 0),
                     "said of high ratings": ", ".join(w for w, score in reversed(words) if score < 0)})
    return rows


def compute_stats(critiques: list[Critique]) -> dict[str, Any]:
    """The statistics notebook 05 reads (keys listed in docs/CONTRACTS.md)."""
    grade_counts = Counter(c.grade for c in critiques)
    ratings = {a: Counter() for a in ATTRIBUTES}
    for c in critiques:
        for a in ATTRIBUTES:
            r = c.rating(a)
            if r is not None:
                ratings[a][r] += 1
    agreement = {"grade": ordinal_alpha(critiques, lambda c: GRADE_SCORE[c.grade])}
    for a in ATTRIBUTES:
        agreement[a] = ordinal_alpha(critiques, lambda c, a=a: c.rating(a))
    kinds = sorted({c.annotator_kind for c in critiques})
    return {
        "grade_counts": {g: grade_counts.get(g, 0) for g in GRADES},
        "level_counts": {lv: sum(n for g, n in grade_counts.items() if GRADE_TO_LEVEL[g] == lv)
                         for lv in ("high", "medium", "low")},
        "attribute_ratings": {a: {str(r): ratings[a].get(r, 0) for r in range(RATING_MIN, RATING_MAX + 1)}
                              for a in ATTRIBUTES},
        "description_lengths": [len(c.description.split()) for c in critiques],
        "agreement": agreement,
        "agreement_metric": "Krippendorff's alpha, ordinal (krippendorff package), measured by this run",
        "characteristic_words": characteristic_words(critiques),
        "n_images": len({c.image_id for c in critiques}),
        "n_critiques": len(critiques),
        "n_annotators": len({c.annotator for c in critiques}),
        "annotator_kind": kinds[0] if len(kinds) == 1 else ("mixed" if kinds else ""),
        "annotator_kinds": {k: sum(1 for c in critiques if c.annotator_kind == k) for k in kinds},
        "protocol_versions": sorted({c.protocol_version for c in critiques}),
    }


def plot_stats(stats: dict[str, Any], stem: str | Path | None = None):
    """Grade counts, attribute rating distributions and agreement in one figure.

    With ``stem``, the figure is also saved as ``<stem>.png`` and ``<stem>.pdf``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from aes_lib.style import MEASURED_COLORS, readable

    kind = stats.get("annotator_kind", "")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].bar(list(stats["grade_counts"]), list(stats["grade_counts"].values()), color=MEASURED_COLORS[1])
    axes[0].set(title=f"Overall grades ({kind}), measured", ylabel="critiques")
    mat = np.array([[stats["attribute_ratings"][a][str(r)] for r in range(RATING_MIN, RATING_MAX + 1)]
                    for a in ATTRIBUTES], dtype=float)
    mat = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)
    im = axes[1].imshow(mat, cmap="Blues", vmin=0, vmax=max(float(mat.max()), 0.01), aspect="auto")
    axes[1].set(title="Attribute ratings (share)", xticks=range(5), xticklabels=range(1, 6),
                yticks=range(len(ATTRIBUTES)), yticklabels=[readable(a) for a in ATTRIBUTES], xlabel="rating")
    fig.colorbar(im, ax=axes[1], fraction=0.04)
    agree = stats["agreement"]
    names = list(agree)
    axes[2].barh([readable(n) for n in names], [agree[n] if agree[n] is not None else 0 for n in names],
                 color=MEASURED_COLORS[0])
    axes[2].set(title="Krippendorff's alpha (ordinal), measured", xlim=(-0.2, 1))
    axes[2].invert_yaxis()
    fig.tight_layout()
    if stem is not None:
        from aes_lib.style import save_figure

        save_figure(fig, stem)
    return fig
