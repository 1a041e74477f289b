"""Controls beside the models (blind answer prior, shuffled images), the paired bootstrap, and an
AesI offline judge that degenerate answers cannot game."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aes_lib.evaluate.controls import (answer_prior, control_kind, evaluate_controls, image_permutation,
                                       paired_differences, prior_choice, fit_answer_prior, shuffled_name)
from aes_lib.evaluate.judge import ProxyOverlapJudge, repeated_answers
from aes_lib.evaluate.stats import bootstrap_ci, paired_bootstrap
from aes_lib.schema import BenchItem


def _mcq(i, options, answer, question="Is the photo blurred?", dim="AesP", image=None):
    return BenchItem(id=f"q{i}", image=image or f"images/im{i}.png", dimension=dim, question=question,
                     options=list(options), answer=answer, attribute="technical_quality", qtype="yes-no")


# --- the blind answer prior ---------------------------------------------------------------------

def test_prior_picks_the_most_frequent_training_answer_text_not_a_position():
    train = [_mcq(0, ["Yes", "No"], "B"), _mcq(1, ["No", "Yes"], "A"), _mcq(2, ["Yes", "No"], "A")]
    counts = fit_answer_prior(train)   # "No" twice, "Yes" once
    assert prior_choice(_mcq(9, ["Yes", "No"], "A"), counts) == "B"
    assert prior_choice(_mcq(9, ["No", "Yes"], "B"), counts) == "A"
    # another question of the same kind backs off to (dimension, attribute, question form)
    assert prior_choice(_mcq(9, ["Yes", "No"], "A", question="Is it noisy?"), counts) == "B"
    # nothing known: the alphabetically first option text, wherever it stands
    assert prior_choice(_mcq(9, ["zebra", "apple"], "A", dim="AesE"), counts) == "B"


def test_prior_answers_aesi_with_one_training_critique_and_is_flagged():
    train = [BenchItem(id=f"t{i}:AesI", image=f"t{i}.png", dimension="AesI", question="Describe it.",
                       reference=ref) for i, ref in enumerate(
                           ["The light is soft and the colours are warm.", "Soft light, warm colours, "
                            "a tidy composition.", "A noisy frame with a tilted horizon."])]
    test = [BenchItem(id=f"x{i}:AesI", image=f"x{i}.png", dimension="AesI", question="Describe it.",
                      reference="whatever") for i in range(4)]
    preds = answer_prior(test, train)
    assert {p["response"] for p in preds} == {"The light is soft and the colours are warm."}   # most typical
    flags = repeated_answers(preds)
    assert flags and flags[0]["count"] == 4 and flags[0]["of"] == 4


# --- shuffled images ----------------------------------------------------------------------------

def test_image_permutation_moves_every_image_to_another_source_photo():
    items = [_mcq(i, ["Yes", "No"], "A", image=f"images/p{i // 3}__v{i % 3}.png") for i in range(12)]
    group = {it.image: it.image.split("__")[0] for it in items}
    perm = image_permutation(items, seed=0, group_of=group)
    assert sorted(perm) == sorted(perm.values()) == sorted(group)   # a permutation of the images
    assert all(group[a] != group[b] for a, b in perm.items())       # never a variant of its own photo
    assert perm == image_permutation(items, seed=0, group_of=group)
    assert perm != image_permutation(items, seed=1, group_of=group)
    with pytest.raises(ValueError, match="two different images"):
        image_permutation(items[:1])


def test_control_names():
    assert control_kind("blind-prior") == "blind-prior"
    assert control_kind(shuffled_name("finetuned")) == "shuffled-images"
    assert control_kind("finetuned") == control_kind("finetuned-generate") == ""


# --- the paired bootstrap -----------------------------------------------------------------------

def test_paired_bootstrap_resamples_items_with_both_scores():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 300).astype(float)
    b = a.copy()
    b[:12] = 1.0 - b[:12]            # two models that disagree on 12 of 300 items
    diff, lo, hi = paired_bootstrap(a, b, n_boot=2000, seed=0)
    assert diff == pytest.approx(float(np.mean(a - b)))
    assert lo <= diff <= hi
    # items resampled together: only the 12 disagreements vary, so the interval is narrow;
    # resampling the two models independently would give about +-0.08
    assert hi - lo < 0.05
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1, 0], [1])


def test_bootstrap_interval_is_the_95_percent_one():
    x = np.random.default_rng(3).normal(size=2000)
    lo, hi = bootstrap_ci(x, n_boot=4000, seed=0)
    se = float(np.std(x)) / math.sqrt(x.size)
    # a 95% interval spans 2 x 1.96 standard errors (a 97.5% one would be 14% wider)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.05)
    d, plo, phi = paired_bootstrap(x, np.zeros_like(x), n_boot=4000, seed=0)
    assert (phi - plo) == pytest.approx(2 * 1.96 * se, rel=0.05)


def test_paired_differences_per_dimension():
    model = {"a": 1.0, "b": 1.0, "c": 0.0, "i": 1.5}
    control = {"a": 0.0, "b": 1.0, "c": 0.0, "i": 0.5, "extra": 1.0}
    rows = paired_differences(model, control, {"a": "AesP", "b": "AesP", "c": "AesP", "i": "AesI"})
    assert [r["dimension"] for r in rows] == ["AesP", "AesI"]
    assert rows[0]["n"] == 3 and rows[0]["difference"] == pytest.approx(1 / 3)
    assert rows[1]["difference"] == pytest.approx(1.0) and rows[1]["n"] == 1


# --- an offline judge that cannot be gamed ------------------------------------------------------

QUESTION = "Describe the aesthetics of this image: its light, colour, composition and mood."
#: per image: two critiques that form the reference, and a third, held-out real critique
CRITIQUES = [
    ("The harbour at dusk glows with warm orange light; the boats are placed on the lower third "
     "and the calm water doubles the sky.",
     "Warm dusk light over the harbour, a balanced frame with the boats low and a peaceful mood.",
     "A peaceful harbour scene at dusk: warm orange light, boats low in the frame, still water "
     "reflecting the sky, a balanced and calm composition."),
    ("The portrait is badly out of focus; the face is soft and the eyes are not sharp, which "
     "spoils an otherwise pleasant pose.",
     "Blurred portrait, the eyes lack sharpness; flat grey light makes the skin look dull.",
     "The face is blurred and the eyes are soft; the dull grey light and missing sharpness make "
     "the portrait feel lifeless despite the pose."),
    ("The cat fills the frame nicely and its green eyes are sharp; the background is cluttered "
     "with a bright window that pulls attention.",
     "Sharp eyes and good framing of the cat, but the bright window behind it is distracting.",
     "Nice sharp cat portrait with striking green eyes, tight framing, let down by a cluttered "
     "background and a distracting bright window."),
    ("Heavy noise covers the night street; the neon colours are vivid but the shadows are "
     "muddy and grainy.",
     "A grainy night shot: vivid neon, muddy noisy shadows, a tilted horizon.",
     "Vivid neon colours in a night street, but grainy noise and muddy shadows, and the horizon "
     "is tilted."),
    ("The mountain lake is overexposed; the sky is blown out white and the snow has lost all "
     "detail, though the composition is classic.",
     "Blown highlights in the sky and snow; a classic lake composition washed out by overexposure.",
     "Overexposed landscape: the white sky and snow are blown out with no detail left, a classic "
     "but washed out lake composition."),
    ("A still life of fruit with a strong colour cast: everything looks green, the apples "
     "unnatural; the arrangement itself is tidy.",
     "Green colour cast over the fruit still life makes the apples look sickly; tidy arrangement.",
     "The fruit still life has a green colour cast that makes the apples look unnatural and "
     "sickly, although the arrangement is tidy."),
]


def _items():
    return [BenchItem(id=f"im{i}:AesI", image=f"im{i}.png", dimension="AesI", question=QUESTION,
                      reference=f"{a} {b}") for i, (a, b, _) in enumerate(CRITIQUES)]


def _mean_scores(answers):
    scores = ProxyOverlapJudge().score(_items(), answers)
    return {c: sum(s[c] for s in scores) / len(scores) for c in ("relevance", "precision", "completeness",
                                                                   "overall")}


DEGENERATE = {
    "one word": ["composition"] * len(CRITIQUES),
    "one on-topic word each": ["orange", "blurred", "cat", "noise", "overexposed", "green"],
    "the same sentence for every image": ["The composition, which is poor."] * len(CRITIQUES),
    "the same real critique for every image": [CRITIQUES[0][2]] * len(CRITIQUES),
    "the question repeated": [QUESTION] * len(CRITIQUES),
    "empty": [""] * len(CRITIQUES),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_degenerate_answers_rank_below_a_real_critique(case):
    real = _mean_scores([c for _, _, c in CRITIQUES])
    bad = _mean_scores(DEGENERATE[case])
    assert real["overall"] > 0.8
    assert bad["overall"] < 0.6 * real["overall"], (case, bad, real)
    assert bad["relevance"] < real["relevance"], (case, bad, real)   # never "more relevant" than a critique


def test_judge_keeps_the_basic_scores():
    judge = ProxyOverlapJudge()
    assert judge.name == "proxy-overlap"
    ref = "A blurred photo with muddy colours and a weak, tilted composition."
    assert judge.score_one(ref, ref) == {"relevance": 2.0, "precision": 2.0, "completeness": 2.0,
                                         "overall": 2.0}
    assert judge.score_one("My favourite football team won yesterday.", ref)["overall"] < 0.3
    assert judge.score_one("", ref)["overall"] == 0.0


def test_repeated_answers_are_flagged_only_when_many():
    preds = [{"id": f"i{k}", "dimension": "AesI", "response": r} for k, r in
             enumerate(["The composition, which is poor."] * 5 + ["A real critique.", "Another one."])]
    flags = repeated_answers(preds)
    assert flags == [{"dimension": "AesI", "response": "the composition, which is poor.", "count": 5, "of": 7}]
    assert repeated_answers(preds[4:]) == []   # three different answers


# --- controls through a real (tiny) model ------------------------------------------------------

def test_evaluate_controls_scores_prior_and_shuffled_images_beside_the_model(tmp_path):
    import csv
    import json
    import shutil

    from aes_lib.evaluate import EvalConfig, build_bench
    from aes_lib.io import write_json
    from aes_lib.models import build_tiny_llava
    from test_evaluate_model import _outputs, _png

    files = [_png(tmp_path / "src" / f"images/im{i}.png", i).relative_to(tmp_path / "src").as_posix()
             for i in range(4)]
    out = _outputs(tmp_path, files)
    for f in files:
        (out / "data" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "src" / f, out / "data" / f)
    # two of the four photos become training photos, so the prior has something to learn from
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    for rec in manifest["images"][2:]:
        rec["split"] = "train"
    write_json(out / "data" / "manifest.json", manifest)
    build_bench(out)
    model = build_tiny_llava(tmp_path / "tiny", seed=0)
    cfg = EvalConfig.from_dict(out_dir=str(out), progress=False, n_boot=50)
    controls = evaluate_controls(cfg, {"base": {"model_path": model}})
    assert set(controls) == {"blind-prior", "base:shuffled-images"}
    prior, shuffled = controls["blind-prior"], controls["base:shuffled-images"]
    assert prior["control"] == "blind-prior" and shuffled["control"] == "shuffled-images"
    assert shuffled["control_of"] == "base"
    assert set(prior["per_item"]) and set(prior["per_item"]) == set(shuffled["per_item"])
    assert all(v in (0.0, 1.0) for k, v in prior["per_item"].items() if not k.endswith("AesI"))
    preds = [json.loads(l) for l in (out / "eval" / "predictions_base_shuffled-images.jsonl").open()]
    assert all(p["shown_image"] != p["image"] for p in preds)
    rows = list(csv.DictReader((out / "eval" / "results.csv").open()))
    assert {r["model"] for r in rows} == {"blind-prior", "base:shuffled-images"}
    assert all(float(r["ci_low"]) <= float(r["value"]) + 1e-9 <= float(r["ci_high"]) + 2e-9 for r in rows)


def test_proxy_judge_is_stable_when_a_repeated_answer_changes_by_a_word():
    """One sentence given to every image, a word changed in a few answers: those few are scored as
    repeats too (a model's AesI score must not jump because three answers changed by a word)."""
    from types import SimpleNamespace

    from aes_lib.evaluate.judge import ProxyOverlapJudge

    judge = ProxyOverlapJudge()
    ref = "The warm light and the balanced composition give the portrait a calm, inviting mood."
    items = [SimpleNamespace(question="Explain the aesthetics of this photo.", reference=ref) for _ in range(20)]
    same = "The photo has warm light, balanced composition, calm mood and inviting colours overall."
    varied = same.replace("overall", "throughout")
    exact = judge.score(items, [same] * 20)
    mixed = judge.score(items, [same] * 17 + [varied] * 3)
    alone = judge.score(items[:1], [same])[0]["overall"]
    assert exact[0]["overall"] < 0.1 * alone
    assert max(s["overall"] for s in mixed) < 0.2 * alone          # the varied three are repeats too
    assert abs(sum(s["overall"] for s in mixed) - sum(s["overall"] for s in exact)) < 0.1 * alone
    different = [f"Answer {i}: " + w for i, w in enumerate(["vivid red sunset sky", "soft blurry crowded street",
                                                              "sharp mountain lake reflection"])]
    assert all(s["overall"] == judge.score_one(a, ref, items[0].question)["overall"]
               for s, a in zip(judge.score(items[:3], different), different))
