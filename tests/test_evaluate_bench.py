"""Benchmarks without a model: building ours, AesBench's layout, scoring responses, statistics, judges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aes_lib.evaluate import bench as B
from aes_lib.evaluate.judge import ProxyOverlapJudge, make_judge, parse_judgement
from aes_lib.evaluate.run import score_aesbench
from aes_lib.evaluate.stats import bootstrap_ci, plcc, srcc
from aes_lib.schema import ATTRIBUTES, BenchItem, Critique, ImageRecord

FIX = Path(__file__).resolve().parent / "fixtures_evaluate" / "aesbench_mini"


def _records():
    degs = ["blur", "none", "overexposed", "tilted", "noise", "color_cast"]
    return [ImageRecord(id=f"im{i}", file=f"images/im{i}.png", source_photo=f"p{i}",
                        split="test" if i < 5 else "train", source_package=f"pkg{i % 2}",
                        category="object", degradation=d, strength=0.0 if d == "none" else 0.5,
                        traits={"subject": f"subject {i}", "mood": f"mood {i}", "palette": f"palette {i}"})
            for i, d in enumerate(degs)]


def _critiques(grades=("good", "fair", "poor", "excellent", "bad", "fair")):
    return [Critique(id=f"c{i}{k}", image_id=f"im{i}", annotator=f"a{k}", annotator_kind="simulated",
                     protocol_version="v", grade=g if k else "good",
                     attributes={a: {"rating": 5 if i == 0 else 1, "word": None} for a in ATTRIBUTES},
                     description=f"Critique {k} of image {i}.")
            for i, g in enumerate(grades) for k in range(3)]


# --- our benchmark ----------------------------------------------------------------------------

def test_build_benchmark_answers_come_from_ground_truth_and_consensus():
    items = B.build_benchmark(_records(), _critiques(), seed=0)
    by_id = {it.id: it for it in items}
    assert {it.image_id for it in items} == {f"im{i}" for i in range(5)}  # test split only
    blur_yn = by_id["im0:AesP:technical_quality:yes-no"]
    assert blur_yn.question == "Is this image blurred?" and blur_yn.options[ord(blur_yn.answer) - 65] == "Yes"
    none_yn = by_id["im1:AesP:technical_quality:yes-no"]
    assert none_yn.options[ord(none_yn.answer) - 65] == "No"
    what = by_id["im4:AesP:technical_quality:what"]
    assert what.options[ord(what.answer) - 65] == "noisy"
    why = by_id["im2:AesP:color_light:why"]
    assert why.options[ord(why.answer) - 65] == "because it is overexposed"
    # consensus (schema.consensus_grade, rounded mean): (good, fair, fair) -> fair -> medium;
    # (good, poor, poor) -> 2.67 -> fair -> medium
    assert by_id["im1:AesA:level:how"].options[ord(by_id["im1:AesA:level:how"].answer) - 65] == "medium"
    assert by_id["im2:AesA:level:how"].options[ord(by_id["im2:AesA:level:how"].answer) - 65] == "medium"
    # mean rating 5 -> good; 1 -> poor
    text = lambda item_id: by_id[item_id].options[ord(by_id[item_id].answer) - 65]  # noqa: E731
    assert text("im0:AesP:composition:how") == "good" and text("im1:AesP:composition:how") == "poor"
    subj = by_id["im3:AesP:content:what"]
    assert subj.options[ord(subj.answer) - 65] == "subject 3" and len(subj.options) == 4
    aesi = by_id["im0:AesI"]
    assert aesi.dimension == "AesI" and "Critique 0 of image 0." in aesi.reference and not aesi.options
    assert {it.source for it in items} == {"pkg0", "pkg1"}
    assert {it.dimension for it in items} == {"AesP", "AesE", "AesA", "AesI"}
    assert {it.qtype for it in items if it.dimension == "AesP"} == {"yes-no", "what", "how", "why"}
    # shuffled options: answers are not all 'A'
    assert len({it.answer for it in items if len(it.options) == 4}) > 1
    # items answered from the critiques say which kind of annotator they came from;
    # items answered from the recorded ground truth or traits say none
    assert aesi.annotator_kind == "simulated" and by_id["im1:AesA:level:how"].annotator_kind == "simulated"
    assert by_id["im0:AesP:composition:how"].annotator_kind == "simulated"
    assert blur_yn.annotator_kind == "" and subj.annotator_kind == ""


def test_scale_order_kept_on_request():
    items = B.build_benchmark(_records(), _critiques(), shuffle_scales=False)
    levels = [it for it in items if it.dimension == "AesA"]
    assert all(it.options == ["high", "medium", "low"] for it in levels)
    assert all(it.options == ["Yes", "No"] for it in items if it.qtype == "yes-no")
    shuffled = B.build_benchmark(_records(), _critiques(), shuffle_scales=True)
    assert any(it.options != ["high", "medium", "low"] for it in shuffled if it.dimension == "AesA")


def test_build_benchmark_is_deterministic_for_a_seed(tmp_path):
    a = B.build_benchmark(_records(), _critiques(), seed=3)
    b = B.build_benchmark(_records(), _critiques(), seed=3)
    assert [x.to_json() for x in a] == [x.to_json() for x in b]
    B.write_benchmark(tmp_path / "b.jsonl", a)
    assert [x.to_json() for x in B.read_benchmark(tmp_path / "b.jsonl")] == [x.to_json() for x in a]


def test_build_benchmark_errors_name_the_image():
    with pytest.raises(ValueError, match="'im4'"):
        B.build_benchmark(_records(), [c for c in _critiques() if c.image_id != "im4"])
    with pytest.raises(ValueError, match="no image in split 'val'"):
        B.build_benchmark(_records(), _critiques(), split="val")


def test_mcq_prompt_has_aesbench_format():
    item = BenchItem(id="x", image="a.png", dimension="AesA", question="Level?", options=["high", "low"])
    text = B.mcq_prompt(item)
    assert text.startswith("Level?\nChoose one from the following options:\nA. high\nB. low\n")
    assert "letter" in text.splitlines()[-1]


# --- AesBench's layout ------------------------------------------------------------------------

def test_load_aesbench_fixture():
    items = B.load_aesbench(FIX / "annotations.json")
    assert len(items) == 14
    p = next(it for it in items if it.id == "nat_001.jpg:AesE")
    assert p.options == ["joy", "sadness", "calm", "fear"] and p.answer == "" and p.source == "NIs"
    assert next(it for it in items if it.id == "nat_001.jpg:AesI").options == []


@pytest.mark.parametrize("entry,field,problem", [
    ({"AesP_data": {"Question": "Q?", "Options": "A. Yes\nC. No"}}, "AesP_data", "option line 2"),
    ({"AesP_data": {"Question": "Q?", "Options": "A. Yes"}}, "AesP_data", "at least two"),
    ({"AesE_data": {"Options": "A. Yes\nB. No"}}, "AesE_data", "Question"),
    ({"AesA1_data": {"Question": "Q?", "Options": 3}}, "AesA1_data", "lettered options"),
    ({"AesI_data": "describe"}, "AesI_data", "Question"),
])
def test_malformed_aesbench_file_names_image_and_field(tmp_path, entry, field, problem):
    good = json.loads((FIX / "annotations.json").read_text())
    good["bad_image.jpg"] = entry
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(good))
    with pytest.raises(ValueError) as e:
        B.load_aesbench(path)
    msg = str(e.value)
    assert "'bad_image.jpg'" in msg and field in msg and problem in msg


def test_malformed_entry_without_any_dimension(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"img.png": {"Question": "?"}}))
    with pytest.raises(ValueError, match="'img.png'.*none of the fields"):
        B.load_aesbench(tmp_path / "a.json")


def test_score_aesbench_fixture_gives_expected_accuracies(tmp_path):
    s = score_aesbench(FIX / "responses.json", FIX / "key.json", bench=FIX / "annotations.json",
                       out_dir=tmp_path, n_boot=200)
    acc = {(r["dimension"], r["group_by"], r["group"]): r["value"] for r in s["rows"] if r["metric"] == "accuracy"}
    assert acc[("AesP", "all", "all")] == 0.75
    assert acc[("AesE", "all", "all")] == 0.5
    assert acc[("AesA", "all", "all")] == 0.5
    assert acc[("AesP", "source", "NIs")] == 0.5 and acc[("AesP", "source", "AGIs")] == 1.0
    assert [u["id"] for u in s["unparsed"]] == ["agi_003.png:AesE"]
    overall = {r["group"]: r["value"] for r in s["rows"] if r["metric"] == "overall[proxy-overlap]"}
    assert overall["all"] > 0 and (tmp_path / "results.csv").exists()
    n = {r["dimension"]: r["n"] for r in s["rows"] if r["group_by"] == "all"}
    assert n["AesP"] == 4 and n["AesI"] == 2


def test_score_cli(tmp_path, capsys):
    from aes_lib.cli import main

    rc = main(["evaluate", "score", "--format", "aesbench", "--responses", str(FIX / "responses.json"),
               "--key", str(FIX / "key.json"), "--bench", str(FIX / "annotations.json"), "--name", "fixture"])
    out = capsys.readouterr().out
    assert rc == 0 and "fixture\tAesP\taccuracy\t0.7500" in out and "agi_003.png:AesE" in out
    # without the annotation file, a key holding option texts cannot be resolved: say how to fix it
    with pytest.raises(ValueError, match="'nat_001.jpg'.*AesA1.*--bench"):
        score_aesbench(FIX / "responses.json", FIX / "key.json")
    # ... while a key and responses of letters only score without it
    letters_key = {"nat_001.jpg": {"AesP_answer": "A"}, "art_002.png": {"AesP_answer": "B"}}
    (tmp_path / "k.json").write_text(json.dumps(letters_key))
    (tmp_path / "r.json").write_text(json.dumps({"nat_001.jpg": {"AesP_response": "The answer is A."},
                                                 "art_002.png": {"AesP_response": "(A)"}}))
    s = score_aesbench(tmp_path / "r.json", tmp_path / "k.json")
    assert [r["value"] for r in s["rows"] if r["group_by"] == "all"] == [0.5]


def test_key_answer_naming_no_option_is_an_error(tmp_path):
    key = json.loads((FIX / "key.json").read_text())
    key["art_002.png"]["AesE_answer"] = "maybe"
    (tmp_path / "k.json").write_text(json.dumps(key))
    with pytest.raises(ValueError, match="'art_002.png'.*AesE"):
        score_aesbench(FIX / "responses.json", tmp_path / "k.json", bench=FIX / "annotations.json")


def test_responses_round_trip(tmp_path):
    items = B.load_aesbench(FIX / "annotations.json")
    answers = {it.id: f"resp {it.id}" for it in items}
    merged: dict = {}   # the merged one-file form score also reads
    for it in items:
        merged.setdefault(it.image, {})[B.RESPONSE_KEYS[it.dimension]] = answers[it.id]
    (tmp_path / "r.json").write_text(json.dumps(merged))
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["nat_001.jpg"]["AesA1_response"] == "resp nat_001.jpg:AesA"
    assert B.read_aesbench_responses(tmp_path / "r.json") == answers


def test_score_dataset_and_format_detection(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps([{"image": "a.jpg", "gt_score": 5}, {"image": "b.jpg", "gt_score": 2.5}]))
    assert B.load_score_dataset(tmp_path / "s.json")[0] == {"image": "a.jpg", "gt_score": 5.0}
    assert B.detect_format(tmp_path / "s.json") == "scores"
    assert B.detect_format(FIX / "annotations.json") == "aesbench"
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "a.jpg", "gt_score": "high"}]))
    with pytest.raises(ValueError, match="'a.jpg'.*gt_score"):
        B.load_score_dataset(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        B.detect_format(tmp_path / "missing.json")


# --- statistics -------------------------------------------------------------------------------

def test_bootstrap_is_deterministic_for_a_seed():
    x = np.random.default_rng(1).integers(0, 2, 200).astype(float)
    a, b, c = bootstrap_ci(x, seed=7), bootstrap_ci(x, seed=7), bootstrap_ci(x, seed=8)
    assert a == b and a != c
    assert a[0] < x.mean() < a[1] and 0.0 < a[1] - a[0] < 0.2
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert all(np.isnan(bootstrap_ci([])))


def test_srcc_and_plcc_with_logistic_fit():
    x = np.linspace(-3, 3, 40)
    y = 1 + 4 / (1 + np.exp(-2 * x))             # monotone, non-linear
    assert srcc(x, y) == pytest.approx(1.0)
    assert plcc(x, y) == pytest.approx(1.0, abs=1e-3)
    assert plcc(x, y, logistic=False) < plcc(x, y)
    assert srcc(x, -y) == pytest.approx(-1.0)
    assert plcc(x, -y) <= 0.0   # the fitted logistic only rises: no sign flip into a good PLCC


# --- judges -----------------------------------------------------------------------------------

def test_proxy_judge_scores_and_name():
    judge = make_judge("proxy-overlap")
    assert judge.name == "proxy-overlap"
    ref = "A blurred photo with muddy colours and a weak, tilted composition."
    same = judge.score_one(ref, ref)
    assert same == {"relevance": 2.0, "precision": 2.0, "completeness": 2.0, "overall": 2.0}
    off = judge.score_one("My favourite football team won yesterday.", ref)
    assert off["overall"] < 0.3
    partial = judge.score_one("The colours are muddy and the composition is tilted.", ref)
    assert partial["precision"] > partial["completeness"] > 0
    assert ProxyOverlapJudge().score_one("", ref)["overall"] == 0.0


def test_parse_judgement():
    assert parse_judgement('{"relevance": 2, "precision": 1, "completeness": 0}')["overall"] == 1.0
    assert parse_judgement('Sure! {"relevance": 1, "precision": 1, "completeness": 1}')["overall"] == 1.0
    for bad in ("no json", '{"relevance": 3, "precision": 1, "completeness": 1}', '{"relevance": 1}'):
        with pytest.raises(ValueError):
            parse_judgement(bad)
    with pytest.raises(ValueError, match="judge_model"):
        make_judge("api", {})


def test_evaluate_model_validates_a_directly_built_config(tmp_path):
    from aes_lib.evaluate import EvalConfig, evaluate_model

    cfg = EvalConfig(out_dir=str(tmp_path), method="bogus")   # the constructor does not check
    with pytest.raises(ValueError, match="'method'"):
        evaluate_model(cfg, "m", model_path="tiny")
    assert not (tmp_path / "eval").exists()   # stopped before writing anything
