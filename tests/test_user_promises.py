"""Behaviour users rely on that one-line slips would break without any other test noticing:
answer extraction, the benchmark's seeded option order, the blind prior, the offline judge,
key-file layouts, duplicate import rows, the generation cache, refinement re-asks, first-token
scoring and gradient accumulation. Each test names the slip it catches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aes_lib.schema import BenchItem, Critique, read_jsonl
from conftest import REPO
from generate_fixtures import make_inputs

HERE = Path(__file__).resolve().parent


def _aes(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aes_lib.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{HERE}", "OMP_NUM_THREADS": "1",
                               **(env or {})})


# --- answers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["The answer is A and B.", "The answer is A or B.", "A, B", "Either (A) or (C)."])
def test_an_answer_naming_two_options_is_a_hedge_not_the_first(text):
    from aes_lib.evaluate.extract import extract_option

    assert extract_option(text, ["Good", "Average", "Poor"]) is None
    assert extract_option("The answer is A.", ["Good", "Average", "Poor"]) == "A"   # one letter still counts


# --- the benchmark ------------------------------------------------------------------------------

def test_the_benchmarks_option_order_follows_the_seed(tmp_path):
    from aes_lib.evaluate.bench import build_benchmark
    from aes_lib.schema import read_manifest

    paths = make_inputs(tmp_path, n_photos=12, per_image=2)
    images = read_manifest(tmp_path / "data" / "manifest.json")
    critiques = read_jsonl(tmp_path / "critiques" / "critiques.jsonl", Critique)
    a = {it.id: it.options for it in build_benchmark(images, critiques, seed=0)}
    again = {it.id: it.options for it in build_benchmark(images, critiques, seed=0)}
    b = {it.id: it.options for it in build_benchmark(images, critiques, seed=1)}
    assert a == again and len(a) >= 10                       # a seed gives one order
    assert set(a) == set(b)
    moved = [i for i in a if a[i] != b[i] and sorted(a[i]) == sorted(b[i])]
    assert len(moved) >= len(a) // 4, (len(moved), len(a))   # another seed, other orders


def test_the_blind_prior_answers_each_question_on_its_own():
    from aes_lib.evaluate.controls import answer_prior

    def item(i, question, answer_text, options=("Good", "Poor")):
        return BenchItem(id=f"q{i}", image=f"im{i}.png", dimension="AesP", question=question,
                         options=list(options), answer="AB"[list(options).index(answer_text)],
                         attribute="composition", qtype="how")

    q1, q2 = "How is the framing of the subject?", "How cluttered is the background?"
    train = [item(i, q1, "Good") for i in range(3)] + [item(10 + i, q2, "Poor") for i in range(3)]
    preds = answer_prior([item(20, q1, "Good"), item(21, q2, "Poor")], train)
    assert [p["response"] for p in preds] == ["Good", "Poor"]


def test_the_offline_judge_scores_one_answer_for_every_image_and_the_question_echo_down():
    from aes_lib.evaluate.judge import ProxyOverlapJudge

    judge = ProxyOverlapJudge()
    ref = "The warm light falls softly on the cup and the centred composition feels calm and balanced."
    answer = "Warm soft light on the cup; the centred, balanced composition feels calm."
    items = [BenchItem(id=f"i{k}:AesI", image=f"im{k}.png", dimension="AesI",
                       question="Describe the aesthetics of this image.", options=[], answer="",
                       reference=ref) for k in range(4)]
    once = judge.score(items[:1], [answer])[0]["overall"]
    everywhere = judge.score(items, [answer] * 4)
    assert once > 1.0 and all(s["overall"] < once for s in everywhere)
    echo = judge.score(items[:1], ["Describe the aesthetics of this image."])[0]
    assert echo == {"relevance": 0.0, "precision": 0.0, "completeness": 0.0, "overall": 0.0}


def test_a_key_file_in_the_official_response_layout_is_read(tmp_path):
    from aes_lib.evaluate.run import score_aesbench

    responses = {"nat_001.jpg": {"AesP_response": "A"}, "art_002.png": {"AesP_response": "A"}}
    (tmp_path / "r.json").write_text(json.dumps(responses))
    for field in ("AesP_answer", "AesP_response"):   # the official key files use *_response
        (tmp_path / "k.json").write_text(json.dumps({"nat_001.jpg": {field: "A"}, "art_002.png": {field: "B"}}))
        rows = score_aesbench(tmp_path / "r.json", tmp_path / "k.json")["rows"]
        overall = [r for r in rows if r["group_by"] == "all" and r["dimension"] == "AesP"]
        assert [(r["value"], r["n"]) for r in overall] == [(0.5, 2)], field


# --- imports ------------------------------------------------------------------------------------

def test_duplicate_import_rows_that_disagree_are_rejected_not_merged(tmp_path):
    from aes_lib.collect.importers import import_file

    text_a = "A calm scene with soft light and a clear subject in the centre."
    text_b = "A harsh and cluttered scene where nothing draws the eye at all."
    (tmp_path / "lab.csv").write_text("image,grade,description,annotator\n"
                                      f"im1.png,good,{text_a},ann\n"
                                      f"im1.png,bad,{text_b},ann\n"
                                      f"im1.png,good,{text_a},other\n")
    result = import_file(tmp_path / "lab.csv", "csv")
    kept = {(c.annotator, c.image_id): (c.grade, c.description) for c in result.critiques}
    assert kept == {("ann", "im1"): ("good", text_a), ("other", "im1"): ("good", text_a)}
    assert [(r["reason"], r["record"]["grade"]) for r in result.rejects] == [("duplicate", "bad")]


# --- the generation cache and refinement -------------------------------------------------------

def test_changing_temperature_max_tokens_or_json_mode_misses_the_cache(tmp_path, monkeypatch):
    from aes_lib.client import ChatRequest, ClientConfig, LLMClient
    from fake_openai_server import start_server

    monkeypatch.setenv("AES_CACHE_KEY", "sk-cache-test")
    with start_server() as server:
        base = {"base_url": server.base_url, "model": "m", "api_key_env": "AES_CACHE_KEY",
                "cache_path": str(tmp_path / "cache.sqlite"), "temperature": 0.7, "max_tokens": 64,
                "json_mode": True}
        req = [ChatRequest("k", [{"role": "user", "content": "hi"}], json.loads)]

        def sent(**change) -> int:
            before = server.requests()
            client = LLMClient(ClientConfig.from_dict({**base, **change}))
            [r] = client.run(req, progress=False)
            client.close()
            assert r.ok
            return server.requests() - before

        assert sent() == 1 and sent() == 0   # the same settings: a cache hit
        assert sent(temperature=0.0) == 1
        assert sent(max_tokens=65) == 1
        assert sent(json_mode=False) == 1
        assert sent() == 0


def test_a_refinement_that_changes_the_annotators_grade_is_asked_again(tmp_path):
    from fake_openai_server import start_server

    make_inputs(tmp_path, n_photos=2, per_image=1)
    critiques = read_jsonl(tmp_path / "critiques" / "critiques.jsonl", Critique)
    with start_server(responder="grade_changing_responder:change_grade_once") as server:
        proc = _aes("generate", "--out", str(tmp_path), "--backend", "openai", "--base-url", server.base_url,
                    "--model", "fake-gpt", "--api-key-env", "AES_GRADE_KEY", "--no-progress",
                    env={"AES_GRADE_KEY": "sk-grade-test"})
        assert proc.returncode == 0, proc.stderr
        n_requests = server.requests()
    refined = [json.loads(line) for line in (tmp_path / "instructions" / "refined.jsonl").read_text().splitlines()]
    grade_of = {c.id: c.grade for c in critiques}
    assert len(refined) == len(critiques)
    for r in refined:   # the text kept is the reply that kept the annotator's grade
        assert r["text"].endswith(f"The grade is {grade_of[r['critique_id']]}."), r
    assert n_requests == 3 * len(critiques)   # refine twice (asked again), assemble once


# --- models ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from aes_lib.models import build_tiny_llava, load_model_and_processor

    path = build_tiny_llava(tmp_path_factory.mktemp("tiny") / "model", seed=0)
    return load_model_and_processor(path)


def test_first_token_scoring_falls_back_to_full_scoring_when_options_share_a_first_token(tiny, tmp_path):
    from aes_lib.evaluate.likelihood import OptionScorer, Query
    from aes_lib.models import build_prompt

    model, processor = tiny
    image = tmp_path / "im.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(image)
    prompt = build_prompt(processor, [{"from": "human", "value": "<image>\nHow is the light?"}])
    conts = [" the light is soft", " the colours are dull"]
    scorer = OptionScorer(model, processor, mode="first-token")
    firsts = [scorer._continuation_ids(prompt, c)[0] for c in conts]
    assert firsts[0] == firsts[1]   # the case under test: one shared first token
    [first] = scorer.score([Query("q", image, prompt, conts)])
    [full] = OptionScorer(model, processor, mode="full").score([Query("q", image, prompt, conts)])
    assert first == pytest.approx(full, abs=1e-4) and first[0] != pytest.approx(first[1], abs=1e-4)


def test_gradient_accumulation_gives_the_same_update_for_answers_of_different_lengths(tmp_path):
    from aes_lib.models import build_tiny_llava
    from aes_lib.train import train
    from test_train import _close, make_cfg, trainable_state

    answers = {True: "Yes.", False: "No, it is dark, with deep shadows over the whole scene and no light at all."}
    rng = np.random.RandomState(0)
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "instructions").mkdir()
    records = []
    for i in range(8):
        bright = i % 2 == 0
        Image.fromarray((rng.rand(40, 48, 3) * 60 + (180 if bright else 20)).astype(np.uint8)).save(
            tmp_path / "data" / "images" / f"t{i}.png")
        records.append({"id": f"t{i}", "image": f"images/t{i}.png", "type": "perception_mcq", "qtype": "yes-no",
                        "conversations": [{"from": "human", "value": "<image>\nIs the image bright?"},
                                          {"from": "gpt", "value": answers[bright]}]})
    (tmp_path / "instructions" / "llava_train.json").write_text(json.dumps(records))
    build_tiny_llava(tmp_path / "base_model", corpus_texts=list(answers.values()), seed=0)

    def run(name: str, micro: int) -> dict:
        return train(make_cfg(tmp_path, name, micro_batch_size=micro, lora_dropout=0.0, max_steps=2))

    one, four = run("acc1", 8), run("acc4", 2)
    assert (one["grad_accum"], four["grad_accum"]) == (1, 4)
    # micro-batches of 2 alternate a 2-token and a 20-token answer: a mean per micro-batch
    # would weigh tokens differently from the mean over the whole batch
    assert _close(trainable_state(tmp_path / "acc1/adapter"), trainable_state(tmp_path / "acc4/adapter"), atol=1e-5)
