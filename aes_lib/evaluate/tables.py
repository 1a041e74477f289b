"""Helpers notebook 04 calls: which models to evaluate, counts and result tables, comparisons.

pandas is imported inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from aes_lib.schema import GRADE_SCORE, BenchItem


def default_models(out_dir: str | Path, base_model: str = "", finetuned_model: str = "") -> dict[str, dict[str, Any]]:
    """``{"base": {...}, "finetuned": {...}}`` from notebook 03's outputs (or the given folders).

    The base model is notebook 03's: its ``model`` setting (``train/run/config.json``) when that
    is a folder or a hub id (the ``gpu`` profile's ``llava-hf/llava-1.5-7b-hf``), else the tiny
    model it built in ``train/base_model``. The fine-tuned model is ``train/run/merged`` when it
    exists, else the base model with ``train/run/adapter``. A missing folder is an error naming
    it; hub ids are resolved when the model loads (:func:`aes_lib.evaluate.run.resolve_model_path`).
    """
    from aes_lib.evaluate.run import is_hub_id

    train = Path(out_dir) / "train"
    trained_on = ""
    if not base_model and (train / "run" / "config.json").exists():
        trained_on = str(json.loads((train / "run" / "config.json").read_text()).get("model") or "")
    base_name = base_model or (trained_on if trained_on not in ("", "tiny") else "")
    base: Any = (base_name if is_hub_id(base_name) else Path(base_name)) if base_name \
        else train / "base_model"
    models: dict[str, dict[str, Any]] = {"base": {"model_path": base, "adapter": None}}
    if finetuned_model:
        models["finetuned"] = {"model_path": Path(finetuned_model), "adapter": None}
    elif (train / "run" / "merged" / "config.json").exists():
        models["finetuned"] = {"model_path": train / "run" / "merged", "adapter": None}
    else:
        models["finetuned"] = {"model_path": base, "adapter": train / "run" / "adapter"}
    for name, m in models.items():
        for key in ("model_path", "adapter"):
            if m[key] is not None and not Path(m[key]).exists() and not is_hub_id(m[key]):
                raise FileNotFoundError(f"{m[key]}: {name} model folder not found (run notebook 03 "
                                        "first, or set base_model / finetuned_model)")
    return models


def contrast_models(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{"tiny-base": {...}, "tiny-finetuned": {...}}``: the random tiny LLaVA notebook 03 trained
    as the contrast (``train/tiny/``), or ``{}`` when it trained none."""
    tiny = Path(out_dir) / "train" / "tiny"
    if not (tiny / "run" / "merged" / "config.json").exists():
        return {}
    return {"tiny-base": {"model_path": tiny / "base_model", "adapter": None},
            "tiny-finetuned": {"model_path": tiny / "run" / "merged", "adapter": None}}


def training_input_format(out_dir: str | Path) -> dict[str, str]:
    """``{"image_mode", "conversation"}`` notebook 03 trained with (``train/run/config.json``), or
    ``{}`` before any training. Notebook 04 evaluates every model with it, so the base model (whose
    folder records no format) sees images and prompts as the fine-tuned one was trained on them."""
    path = Path(out_dir) / "train" / "run" / "config.json"
    if not path.exists():
        return {}
    config = json.loads(path.read_text())
    return {k: str(config[k]) for k in ("image_mode", "conversation") if config.get(k)}


def bench_counts(items: Sequence[BenchItem]):
    """Items per dimension x attribute x question type."""
    import pandas as pd

    df = pd.DataFrame([{"dimension": i.dimension, "attribute": i.attribute or "-", "qtype": i.qtype or "-"}
                       for i in items])
    return df.value_counts().rename("items").reset_index().sort_values(["dimension", "attribute", "qtype"],
                                                                      ignore_index=True)


def read_results(out_dir: str | Path):
    import pandas as pd

    return pd.read_csv(Path(out_dir) / "eval" / "results.csv")


def results_table(out_dir: str | Path, group_by: str = "all", models: Sequence[str] | None = None):
    """Wide table: one row per (dimension, group, metric), one ``value [95% CI]`` column per model."""
    df = read_results(out_dir)
    df = df[df["group_by"] == group_by]
    if models is not None:
        df = df[df["model"].isin(models)]
    df = df.assign(cell=[f"{v:.3f} [{lo:.3f}, {hi:.3f}] n={n}"
                         for v, lo, hi, n in zip(df["value"], df["ci_low"], df["ci_high"], df["n"])])
    return df.pivot_table(index=["dimension", "group", "metric"], columns="model", values="cell",
                          aggfunc="first")


def load_predictions(out_dir: str | Path, model: str) -> list[dict[str, Any]]:
    from aes_lib.evaluate.run import safe_name

    path = Path(out_dir) / "eval" / f"predictions_{safe_name(model)}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no predictions for model {model!r}")
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def compare(out_dir: str | Path, a: str, b: str, seed: int = 0, n_boot: int = 1000):
    """Accuracy of ``b`` minus ``a`` per multiple-choice dimension, paired bootstrap 95% CI."""
    import pandas as pd

    from aes_lib.evaluate.score import paired_difference

    pa, pb = load_predictions(out_dir, a), load_predictions(out_dir, b)
    rows = [paired_difference(pa, pb, d, seed, n_boot) for d in ("AesP", "AesE", "AesA")]
    return pd.DataFrame(rows).assign(comparison=f"{b} - {a}")


def degradation_comparison(out_dir: str | Path, model: str = "finetuned", against: Sequence[str] | None = None,
                           seed: int = 0, n_boot: int = 1000):
    """``model`` against the base model, its shuffled-image control and the blind prior on the AesP
    items answered from recorded degradations (:func:`aes_lib.evaluate.controls.degradation_differences`),
    each a paired difference with a paired bootstrap 95% interval; every row names the photo set."""
    import pandas as pd

    from aes_lib.evaluate.controls import PRIOR_NAME, degradation_differences, photo_set_of, shuffled_name

    against = list(against) if against is not None else ["base", shuffled_name(model), PRIOR_NAME]
    preds = {name: load_predictions(out_dir, name) for name in (model, *against)}
    return pd.DataFrame(degradation_differences(preds, model, against, seed=seed, n_boot=n_boot,
                                                photo_set=photo_set_of(out_dir)))


def degradation_verdict(comparison) -> list[str]:
    """One plain sentence per model of a :func:`degradation_comparison` table (or several
    concatenated): which comparisons it won with a paired interval wholly above 0, and what that
    says about whether it uses the image."""
    from aes_lib.evaluate.controls import SHUFFLED_SUFFIX

    lines = []
    for model, rows in comparison.groupby(comparison["comparison"].str.split(" - ").str[0], sort=False):
        parts, lost, sees = [], [], False
        for _, r in rows.iterrows():
            other = r["comparison"].split(" - ", 1)[1]
            parts.append(f"{other} {r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]")
            if r["ci_low"] > 0:
                sees |= other.endswith(SHUFFLED_SUFFIX)
            else:
                lost.append(other)
        if not lost:
            verdict = "beats every comparison: fine-tuning taught it to see the defects"
        elif sees:
            verdict = f"uses the image (beats its shuffled-image control), but does not beat {', '.join(lost)}"
        else:
            verdict = "no better with its own images than with other photos': no sign that it uses the image"
        lines.append(f"{model}: {'; '.join(parts)} -> {verdict}")
    return lines


def write_consensus_scores(out_dir: str | Path, split: str = "test") -> Path:
    """A score dataset ``[{image, gt_score}]`` of the split's images: the critiques' mean grade score."""
    from aes_lib.evaluate.bench import consensus
    from aes_lib.evaluate.run import _read_inputs
    from aes_lib.io import write_json

    images, critiques = _read_inputs(out_dir)
    cons = consensus(critiques)
    scores = {}
    for c in critiques:
        scores.setdefault(c.image_id, []).append(GRADE_SCORE[c.grade])
    rows = [{"image": r.file, "gt_score": round(sum(scores[r.id]) / len(scores[r.id]), 4)}
            for r in images if r.split == split and r.id in cons]
    if not rows:
        raise ValueError(f"{out_dir}: no critiqued image in split {split!r}")
    return write_json(Path(out_dir) / "eval" / "consensus_scores.json", rows)


def write_degradation_scores(out_dir: str | Path, split: str = "test") -> Path:
    """A score dataset ``[{image, gt_score}]`` of the split's images whose quality is *recorded*:
    ``gt_score = 1 - strength`` of the image's degradation (an original scores 1). The SRCC of a
    model's predicted quality with it asks whether the model ranks stronger degradations lower."""
    from aes_lib.io import write_json
    from aes_lib.schema import read_manifest

    rows = [{"image": r.file, "gt_score": round(1.0 - float(r.strength), 4)}
            for r in read_manifest(Path(out_dir) / "data" / "manifest.json") if r.split == split]
    if len({r["gt_score"] for r in rows}) < 2:
        raise ValueError(f"{out_dir}: split {split!r} has no degradations of different strengths")
    return write_json(Path(out_dir) / "eval" / "degradation_scores.json", rows)


def unparsed_table(out_dir: str | Path, model: str):
    import pandas as pd

    from aes_lib.evaluate.run import safe_name

    res = json.loads((Path(out_dir) / "eval" / f"results_{safe_name(model)}.json").read_text())
    return pd.DataFrame(res.get("unparsed", []), columns=["id", "response"])


def repeated_answers_table(out_dir: str | Path):
    """Per model: AesI answers given word for word to many items (``results_<model>.json``'s
    ``repeated_answers``). A model on this list is not interpreting images, whatever its score."""
    import pandas as pd

    rows = []
    for path in sorted((Path(out_dir) / "eval").glob("results_*.json")):
        res = json.loads(path.read_text(encoding="utf-8"))
        for flag in res.get("repeated_answers", []):
            rows.append({"model": res.get("model", path.stem[8:]), "dimension": flag["dimension"],
                         "same answer to": f'{flag["count"]} of {flag["of"]} items',
                         "answer": flag["response"][:100]})
    return pd.DataFrame(rows, columns=["model", "dimension", "same answer to", "answer"])


def aesi_examples(out_dir: str | Path, model: str, n: int = 3, bench_path: str | Path | None = None):
    """``n`` AesI items ``model`` answered, each with its whole answer beside the item's reference
    critique and the judge's scores (0-2), to read before trusting the AesI numbers.

    The items are spread evenly over the judged answers sorted by the judge's overall score, best
    first (ties by item id): with ``n = 3`` the best, the middle and the worst answer. The same
    files always give the same rows. Reads ``eval/predictions_<model>.jsonl`` and the benchmark
    (``bench_path``, default ``eval/benchmark.jsonl``); answers without a judgement (no reference)
    are left out, so a model that answered no judged AesI item gives an empty table. Answers are
    shown as stored (generation already drops U+FFFD marks: :func:`aes_lib.models.decode_reply`)."""
    import pandas as pd

    from aes_lib.evaluate.bench import read_benchmark

    if n < 1:
        raise ValueError(f"aesi_examples: n must be at least 1, got {n}")
    bench_path = Path(bench_path) if bench_path else Path(out_dir) / "eval" / "benchmark.jsonl"
    items = {it.id: it for it in read_benchmark(bench_path)}
    judged = [p for p in load_predictions(out_dir, model)
              if p.get("dimension") == "AesI" and p.get("judge") and p["id"] in items]
    judged.sort(key=lambda p: (-p["judge"]["overall"], p["id"]))
    if len(judged) > n:
        at = [0] if n == 1 else [round(i * (len(judged) - 1) / (n - 1)) for i in range(n)]
        judged = [judged[i] for i in at]
    columns = ["item", "question", f"answer by {model}", "reference critique", "reference from",
               "relevance", "precision", "completeness", "overall", "judge"]
    rows = [[p["id"], items[p["id"]].question, p["response"], items[p["id"]].reference,
             items[p["id"]].annotator_kind or "-",
             *(p["judge"][c] for c in ("relevance", "precision", "completeness", "overall")),
             p.get("judge_name", "")] for p in judged]
    return pd.DataFrame(rows, columns=columns)


def chance_levels(items: Sequence[BenchItem]):
    """Per multiple-choice dimension: accuracy of a uniform random guess and of always answering A."""
    import pandas as pd

    rows = []
    for dim in ("AesP", "AesE", "AesA"):
        its = [i for i in items if i.dimension == dim and i.answer]
        if its:
            rows.append({"dimension": dim, "items": len(its),
                         "random guess": round(sum(1 / len(i.options) for i in its) / len(its), 3),
                         "always A": round(sum(i.answer == "A" for i in its) / len(its), 3)})
    return pd.DataFrame(rows)
