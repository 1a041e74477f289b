"""From predictions to numbers: accuracy, AesI judge scores, SRCC / PLCC, with bootstrap 95% CIs.

Rows follow docs/CONTRACTS.md (``eval/results.csv``, long form): ``model, dimension,
group_by, group, metric, value, ci_low, ci_high, n``. Every number here is "measured by this
run".
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from aes_lib.evaluate.stats import (bootstrap_ci, bootstrap_pairs_ci, fit_logistic4, logistic4,
                                    paired_bootstrap, pearson, srcc)

COLUMNS = ("model", "dimension", "group_by", "group", "metric", "value", "ci_low", "ci_high", "n",
           "annotator_kind")
GROUP_BYS = ("all", "attribute", "qtype", "source")
MCQ_DIMENSIONS = ("AesP", "AesE", "AesA")


def _row(model, dim, group_by, group, metric, values, seed, n_boot, kinds: str = "") -> dict[str, Any]:
    lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {"model": model, "dimension": dim, "group_by": group_by, "group": group, "metric": metric,
            "value": round(sum(values) / len(values), 6), "ci_low": round(lo, 6),
            "ci_high": round(hi, 6), "n": len(values), "annotator_kind": kinds}


def annotator_kinds(preds: Sequence[dict[str, Any]]) -> str:
    """The kinds of critiques (``simulated``, ``human``, ...) behind the answers or references of
    ``preds``, joined with ``+``; ``""`` when none came from critiques (recorded ground truth)."""
    return "+".join(sorted({p.get("annotator_kind") or "" for p in preds} - {""}))


def mark(preds: list[dict[str, Any]], key: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Set ``correct`` on multiple-choice predictions (unparsed = wrong); ``key`` overrides answers."""
    for p in preds:
        if p["dimension"] == "AesI":
            p["correct"] = None
            continue
        if key is not None and p["id"] in key:
            p["answer"] = key[p["id"]]
        p["correct"] = (p["pred"] == p["answer"]) if p["answer"] else None
    return preds


def summarise(preds: Sequence[dict[str, Any]], model: str, judge_name: str = "",
              seed: int = 0, n_boot: int = 1000) -> list[dict[str, Any]]:
    """Result rows per dimension x (all, attribute, qtype, source)."""
    rows = []
    for dim in MCQ_DIMENSIONS:
        scored = [p for p in preds if p["dimension"] == dim and p.get("correct") is not None]
        for gb in GROUP_BYS:
            groups: dict[str, list[float]] = {}
            members: dict[str, list[dict[str, Any]]] = {}
            for p in scored:
                g = "all" if gb == "all" else p.get(gb) or ""
                if g:
                    groups.setdefault(g, []).append(1.0 if p["correct"] else 0.0)
                    members.setdefault(g, []).append(p)
            for g in sorted(groups):
                rows.append(_row(model, dim, gb, g, "accuracy", groups[g], seed, n_boot,
                                 annotator_kinds(members[g])))
    judged = [p for p in preds if p["dimension"] == "AesI" and p.get("judge")]
    for gb in ("all", "source"):
        groups: dict[str, list[dict[str, float]]] = {}
        members = {}
        for p in judged:
            g = "all" if gb == "all" else p.get(gb) or ""
            if g:
                groups.setdefault(g, []).append(p["judge"])
                members.setdefault(g, []).append(p)
        for g in sorted(groups):
            for metric in ("relevance", "precision", "completeness", "overall"):
                rows.append(_row(model, "AesI", gb, g, f"{metric}[{judge_name}]",
                                 [s[metric] for s in groups[g]], seed, n_boot, annotator_kinds(members[g])))
    return rows


def score_rows(scored: Sequence[dict[str, Any]], model: str, dataset: str = "scores",
               seed: int = 0, n_boot: int = 1000) -> list[dict[str, Any]]:
    """SRCC and PLCC (after the 4-parameter logistic) of ``pred_score`` against ``gt_score``."""
    pred = [r["pred_score"] for r in scored]
    gt = [r["gt_score"] for r in scored]
    rows = []
    # PLCC's interval resamples (logistic-mapped prediction, human score) pairs with the
    # logistic fitted once on all items: refitting per resample costs 1000 fits for little change
    mapped = logistic4(pred, *fit_logistic4(pred, gt)) if len(pred) >= 4 else pred
    for name, fn, x in (("srcc", srcc, pred), ("plcc", pearson, mapped)):
        value = fn(x, gt) if len(pred) >= 3 else float("nan")
        lo, hi = bootstrap_pairs_ci(x, gt, fn, n_boot=n_boot, seed=seed)
        rows.append({"model": model, "dimension": dataset, "group_by": "all", "group": "all",
                     "metric": name, "value": round(value, 6), "ci_low": round(lo, 6),
                     "ci_high": round(hi, 6), "n": len(pred)})
    return rows


def unparsed(preds: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Multiple-choice answers that named no option (counted wrong)."""
    return [{"id": p["id"], "response": p["response"]} for p in preds
            if p["dimension"] != "AesI" and not p["parsed"]]


#: the per-image fields of an AesBench-layout key file that key a question (bench.load_aesbench_key)
KEY_FIELDS: tuple[str, ...] = tuple(f"{d}_{k}" for d in ("AesP", "AesE", "AesA1")
                                    for k in ("answer", "response", "data")) + ("AesI_reference", "AesI_data")


def check_key_file(path: str | Path) -> int:
    """Validate a key file's layout before scoring; returns how many images it keys. A key in an
    unknown layout (or ``{}``) is an error naming the file and the fields it expected, never a run
    that writes a results file with no rows."""
    from aes_lib.io import read_json

    data = read_json(path, unique_keys=True)   # an image given twice: an error, not "last wins"
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by image file name, "
                         f"got {type(data).__name__}")
    if not data:
        raise ValueError(f"{path}: the key file has no entries")
    keyed = [image for image, entry in data.items() if isinstance(entry, dict)
             and any(entry.get(f) not in (None, "", {}) for f in KEY_FIELDS)]
    if not keyed:
        seen = sorted({f for e in data.values() if isinstance(e, dict) for f in e})
        raise ValueError(f"{path}: unknown key layout: no image has any of the fields "
                         f"{', '.join(KEY_FIELDS)}; its fields are {seen[:10] or 'none'}")
    return len(keyed)


def check_rows(rows: Sequence[dict[str, Any]], responses: str | Path, key: str | Path) -> None:
    """Scoring that yields no result row is an error (nothing is written then)."""
    if not rows:
        raise ValueError(f"{responses}: no question of {key} was scored (no response matches a keyed "
                         "question): nothing written")


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({c: r.get(c) or ("" if c == "annotator_kind" else r[c]) for c in COLUMNS} for r in rows)
    return buf.getvalue()


def merge_results_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Replace the rows of the models in ``rows`` inside ``results.csv``, keep the others."""
    from aes_lib.io import atomic_write_text

    path = Path(path)
    models = {r["model"] for r in rows}
    kept = []
    if path.exists():
        with path.open(encoding="utf-8") as fh:
            kept = [r for r in csv.DictReader(fh) if r["model"] not in models]
    return atomic_write_text(path, rows_to_csv(kept + list(rows)))


def paired_difference(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], dimension: str,
                      seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """Accuracy of ``b`` minus ``a`` on the items both answered, with a paired bootstrap CI."""
    ca = {p["id"]: p["correct"] for p in a if p["dimension"] == dimension and p.get("correct") is not None}
    cb = {p["id"]: p["correct"] for p in b if p["dimension"] == dimension and p.get("correct") is not None}
    ids = sorted(set(ca) & set(cb))
    diff, lo, hi = paired_bootstrap([float(cb[i]) for i in ids], [float(ca[i]) for i in ids],
                                    n_boot=n_boot, seed=seed)
    return {"dimension": dimension, "difference": diff, "ci_low": lo, "ci_high": hi, "n": len(ids)}
