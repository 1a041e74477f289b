"""Controls that say what a model's score means: a blind answer prior and shuffled images.

* **Blind answer prior** (``blind-prior``): answers every question without looking at any image,
  with what the *training* photos' benchmark answered most often to the same question (backing
  off to the same dimension, attribute and question form, then the same dimension). For AesI it
  gives every image the most typical training critique. A model that does not beat it has not
  shown that it uses the image; "above uniform chance" alone means little.
* **Shuffled images** (``<model>:shuffled-images``): the same model answering every item with the
  image of another item (a seeded permutation across source photos). A gain that survives
  shuffling is not visual.

Both are scored, saved and tabled exactly like a model (``eval/results_<name>.json``,
``eval/predictions_<name>.jsonl``, rows in ``eval/results.csv``). :func:`evaluate_controls`
returns each control's per-item scores, so a paired bootstrap
(:func:`aes_lib.evaluate.stats.paired_bootstrap`, :func:`paired_differences`) can test a model
against its control on the same items.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from aes_lib.schema import BenchItem

log = logging.getLogger(__name__)

PRIOR_NAME = "blind-prior"
SHUFFLED_SUFFIX = ":shuffled-images"
CONTROL_NOTES = {
    "blind-prior": "blind answer prior: per question, the answer the training photos' benchmark "
                   "gave most often; no image is looked at",
    "shuffled-images": "the same model answering each item with another item's image",
}


def shuffled_name(model: str) -> str:
    return model + SHUFFLED_SUFFIX


def control_kind(model: str) -> str:
    """``"blind-prior"``, ``"shuffled-images"`` or ``""`` (a model, not a control) for a result name."""
    if model == PRIOR_NAME or model.startswith(PRIOR_NAME + ":"):
        return "blind-prior"
    if model.endswith(SHUFFLED_SUFFIX):
        return "shuffled-images"
    return ""


# --- the blind answer prior ------------------------------------------------------------------

def _keys(it: BenchItem) -> list[tuple]:
    return [(it.dimension, it.attribute, it.qtype, it.question), (it.dimension, it.attribute, it.qtype),
            (it.dimension,)]


def fit_answer_prior(train_items: Sequence[BenchItem]) -> dict[tuple, Counter]:
    """Counts of the correct answer *text* per question key, from a benchmark of training photos."""
    counts: dict[tuple, Counter] = {}
    for it in train_items:
        if it.dimension == "AesI" or not it.answer:
            continue
        text = it.options[ord(it.answer) - ord("A")]
        for key in _keys(it):
            counts.setdefault(key, Counter())[text] += 1
    return counts


def prior_choice(item: BenchItem, counts: Mapping[tuple, Counter]) -> str:
    """The letter of the option the prior picks: the most frequent training answer among the
    item's options at the most specific key that knows any of them; ties and unknowns go to the
    alphabetically first option text (never to an option's position)."""
    for key in _keys(item):
        c = counts.get(key)
        if c and any(c[o] for o in item.options):
            best = max(sorted(item.options), key=lambda o: c[o])
            return chr(ord("A") + item.options.index(best))
    return chr(ord("A") + item.options.index(sorted(item.options)[0]))


def typical_reference(train_items: Sequence[BenchItem]) -> str:
    """The training AesI reference sharing the most content words with the other references."""
    from aes_lib.evaluate.judge import content_words

    refs = sorted({it.reference for it in train_items if it.dimension == "AesI" and it.reference})
    if not refs:
        return ""
    words = [content_words(r) for r in refs]
    df = Counter(w for ws in words for w in ws)
    return max(refs, key=lambda r: (sum(df[w] for w in content_words(r)) / max(1, len(content_words(r))), r))


def answer_prior(items: Sequence[BenchItem], train_items: Sequence[BenchItem]) -> list[dict[str, Any]]:
    """Prediction records (as :mod:`aes_lib.evaluate.answer` writes them) of the blind prior."""
    from aes_lib.evaluate.answer import _record

    counts = fit_answer_prior(train_items)
    critique = typical_reference(train_items)
    preds = []
    for it in items:
        if it.dimension == "AesI":
            preds.append(_record(it, "blind-prior", critique, None))
        else:
            letter = prior_choice(it, counts)
            preds.append(_record(it, "blind-prior", it.options[ord(letter) - ord("A")], letter))
    return preds


def train_benchmark(out_dir: str | Path, seed: int = 0) -> list[BenchItem]:
    """The benchmark built the same way from the training photos (held in memory, not saved)."""
    from aes_lib.evaluate import bench as B
    from aes_lib.evaluate.run import _read_inputs

    images, critiques = _read_inputs(out_dir)
    return B.build_benchmark(images, critiques, seed=seed, split="train")


# --- shuffled images -------------------------------------------------------------------------

def image_permutation(items: Sequence[BenchItem], seed: int = 0,
                      group_of: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{image: image shown instead}``: every image is replaced by another one, from another
    group (source photo) whenever no group holds half the images or more; seeded."""
    images = sorted({it.image for it in items})
    if len(images) < 2:
        raise ValueError("shuffled-image control: needs at least two different images")
    group_of = group_of or {}
    rng = random.Random(f"shuffle-images:{seed}")
    by_group: dict[str, list[str]] = {}
    for im in images:
        by_group.setdefault(group_of.get(im, im), []).append(im)
    groups = sorted(by_group)
    rng.shuffle(groups)
    order = []
    for g in groups:
        members = by_group[g]
        rng.shuffle(members)
        order += members
    # a contiguous group of at most k images shifted by k lands outside itself when n >= 2k
    k = max(len(m) for m in by_group.values())
    shift = k if len(order) >= 2 * k else 1
    return {im: order[(i + shift) % len(order)] for i, im in enumerate(order)}


def photo_set_of(out_dir: str | Path) -> str:
    """The photo set (``data/manifest.json``'s ``photo_set``, e.g. ``full-69`` or ``mini-16``) the
    run under ``out_dir`` was built from; ``""`` when unknown. Numbers from different photo sets
    are never comparable."""
    import json

    path = Path(out_dir) / "data" / "manifest.json"
    if not path.exists():
        return ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return str(data.get("photo_set", "")) if isinstance(data, dict) else ""


def source_photo_groups(out_dir: str | Path) -> dict[str, str]:
    """``{image file: source photo}`` from ``data/manifest.json`` (empty when it is missing)."""
    from aes_lib.schema import read_manifest

    path = Path(out_dir) / "data" / "manifest.json"
    if not path.exists():
        return {}
    return {r.file: r.source_photo for r in read_manifest(path)}


# --- running them ----------------------------------------------------------------------------

def per_item(preds: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``{item id: score}``: 1.0 / 0.0 for a scored multiple-choice answer, the judge's overall
    0-2 score for AesI; unscored items are left out."""
    out = {}
    for p in preds:
        if p["dimension"] == "AesI":
            if p.get("judge"):
                out[p["id"]] = float(p["judge"]["overall"])
        elif p.get("correct") is not None:
            out[p["id"]] = 1.0 if p["correct"] else 0.0
    return out


def evaluate_prior(cfg, name: str = PRIOR_NAME, train_items: Sequence[BenchItem] | None = None) -> dict[str, Any]:
    """Score the blind answer prior on the configured benchmark; save it like a model.

    ``train_items``: the benchmark of the training photos; default, the project's benchmark
    rebuilt from ``<out_dir>``'s training split with the benchmark's seed."""
    from aes_lib.evaluate.run import finish_run, load_items

    cfg.check()
    fmt, items, _ = load_items(cfg)
    if fmt == "scores":
        raise ValueError("the blind answer prior needs a benchmark with questions, not a score dataset")
    if train_items is None:
        if fmt != "benchmark":
            raise ValueError("blind prior on an AesBench-layout file: give train_items (a benchmark "
                             "of training photos in the same question layout)")
        train_items = train_benchmark(cfg.out_dir, cfg.seed)
    preds = answer_prior(items, train_items)
    summary = {"model": name, "control": "blind-prior", "control_note": CONTROL_NOTES["blind-prior"],
               "n_train_items": len(train_items), "format": fmt, "benchmark": str(cfg.bench_path),
               "label": "measured by this run"}
    return finish_run(cfg, name, items, preds, summary)


def evaluate_controls(cfg, models: Mapping[str, Mapping[str, Any]], prior: bool = True,
                      shuffled: bool = True, train_items: Sequence[BenchItem] | None = None
                      ) -> dict[str, dict[str, Any]]:
    """Score the controls beside ``models`` (``{name: evaluate_model keyword arguments}``).

    Returns ``{control name: summary}``; each summary holds ``per_item`` (``{item id: score}``,
    see :func:`per_item`) and ``control_of`` (the model a shuffled control belongs to)."""
    from aes_lib.evaluate.run import EvalConfig, evaluate_model

    out: dict[str, dict[str, Any]] = {}
    if prior:
        out[PRIOR_NAME] = evaluate_prior(cfg, PRIOR_NAME, train_items)
    if shuffled:
        shuffled_cfg = EvalConfig.from_dict({**cfg.to_dict(), "shuffle_images": True})
        for name, kwargs in models.items():
            s = evaluate_model(shuffled_cfg, shuffled_name(name), **kwargs)
            out[shuffled_name(name)] = {**s, "control_of": name}
    return out


def paired_differences(model: Mapping[str, float], control: Mapping[str, float],
                       dimension_of: Mapping[str, str], seed: int = 0, n_boot: int = 1000,
                       level: float = 0.95) -> list[dict[str, Any]]:
    """Per dimension: mean of ``model - control`` over the items both scored, with a paired
    bootstrap interval (items resampled together). ``dimension_of``: ``{item id: dimension}``."""
    from aes_lib.evaluate.stats import paired_bootstrap

    rows = []
    for dim in sorted(set(dimension_of.values()), key=("AesP", "AesE", "AesA", "AesI").index):
        ids = sorted(i for i in set(model) & set(control) if dimension_of.get(i) == dim)
        diff, lo, hi = paired_bootstrap([model[i] for i in ids], [control[i] for i in ids],
                                        n_boot=n_boot, seed=seed, level=level)
        rows.append({"dimension": dim, "difference": diff, "ci_low": lo, "ci_high": hi, "n": len(ids)})
    return rows


# --- the degradation items: does the model use the image? --------------------------------------

DEGRADATION_QTYPES = ("yes-no", "what", "why")


def degradation_attributes() -> frozenset[str]:
    """The AesP attributes whose questions the benchmark answers from the recorded degradation."""
    from aes_lib.evaluate.bench import BENCH_PROMPTS, prompt_yaml

    return frozenset(prompt_yaml(BENCH_PROMPTS)["degradation_attribute"].values())


def is_degradation_item(item: BenchItem | Mapping[str, Any]) -> bool:
    """True for an AesP item answered from the image's recorded degradation (ground truth, not
    critiques): the yes-no / what / why questions of technical quality, colour & light and
    composition, whose ids :func:`aes_lib.evaluate.bench.build_benchmark` writes as
    ``<image>:AesP:<attribute>:<question form>``. Rating ("how") and trait ("what-trait",
    content "what") items are not. ``item``: a benchmark item or a prediction record."""
    get = item.get if isinstance(item, Mapping) else (lambda k: getattr(item, k, ""))
    attr, qtype = get("attribute"), get("qtype")
    return (get("dimension") == "AesP" and qtype in DEGRADATION_QTYPES
            and attr in degradation_attributes() and str(get("id")).endswith(f":AesP:{attr}:{qtype}"))


def degradation_differences(preds: Mapping[str, Sequence[Mapping[str, Any]]], model: str,
                            against: Sequence[str], seed: int = 0, n_boot: int = 1000,
                            level: float = 0.95, photo_set: str = "") -> list[dict[str, Any]]:
    """``model`` against each of ``against`` on the degradation items (:func:`is_degradation_item`)
    both answered: the two accuracies and their paired difference with a paired bootstrap
    interval (:func:`aes_lib.evaluate.stats.paired_bootstrap`). ``preds``: ``{name: prediction
    records}``. A name with no scored degradation item is an error naming it."""
    from aes_lib.evaluate.stats import paired_bootstrap

    scores = {}
    for name in (model, *against):
        if name not in preds:
            raise KeyError(f"degradation_differences: no predictions of {name!r}")
        scores[name] = {p["id"]: 1.0 if p["correct"] else 0.0 for p in preds[name]
                        if p.get("correct") is not None and is_degradation_item(p)}
        if not scores[name]:
            raise ValueError(f"degradation_differences: {name!r} answered no degradation item "
                             "(AesP technical quality / colour & light / composition yes-no, what, why)")
    rows = []
    for other in against:
        ids = sorted(set(scores[model]) & set(scores[other]))
        a, b = [scores[model][i] for i in ids], [scores[other][i] for i in ids]
        diff, lo, hi = paired_bootstrap(a, b, n_boot=n_boot, seed=seed, level=level)
        rows.append({"comparison": f"{model} - {other}", "items": len(ids),
                     "model accuracy": round(sum(a) / len(ids), 4) if ids else float("nan"),
                     "other accuracy": round(sum(b) / len(ids), 4) if ids else float("nan"),
                     "difference": diff, "ci_low": lo, "ci_high": hi,
                     "interval excludes 0": bool(lo > 0 or hi < 0), "photo_set": photo_set})
    return rows
