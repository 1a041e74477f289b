"""Evaluation with real (tiny) models: the shared-prefix scorer, likelihood vs generate, full runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from aes_lib.schema import ATTRIBUTES, BenchItem, Critique, ImageRecord, write_jsonl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _png(path: Path, seed: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from aes_lib.models import build_tiny_llava, load_model_and_processor

    path = build_tiny_llava(tmp_path_factory.mktemp("tiny") / "model", seed=0)
    model, processor = load_model_and_processor(path)
    return path, model, processor


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    return root, [_png(root / f"images/im{i}.png", i).relative_to(root).as_posix() for i in range(4)]


def _mcq(i: int, image: str, n: int = 3, dim: str = "AesP", answer: str = "B") -> BenchItem:
    opts = ["high", "medium", "low", "not sure"][:n] if n <= 4 else [f"choice {k}" for k in range(n)]
    return BenchItem(id=f"q{i}", image=image, dimension=dim, question=f"Question number {i} about the photo?",
                     options=opts, answer=answer, attribute="composition", qtype="how", source="src")


def _naive_logprobs(model, processor, image_path, prompt, conts):
    """Reference: one full forward per option, no cache, no batching."""
    import torch
    from PIL import Image

    out = []
    img = Image.open(image_path).convert("RGB")
    n = processor(images=img, text=prompt, return_tensors="pt")["input_ids"].shape[1]
    for c in conts:
        enc = processor(images=img, text=prompt + c, return_tensors="pt")
        with torch.no_grad():
            logp = model(**enc).logits.float().log_softmax(-1)[0]
        ids = enc["input_ids"][0]
        out.append(sum(logp[j - 1, ids[j]].item() for j in range(n, len(ids))))
    return out


@pytest.mark.parametrize("mode", ["first-token", "full"])
def test_shared_prefix_scores_equal_plain_forward(tiny, images, mode):
    from aes_lib.evaluate.likelihood import OptionScorer, Query
    from aes_lib.models import build_prompt

    _, model, processor = tiny
    root, files = images
    queries = []
    # uneven questions per image, different option counts and texts
    for k, (img, n_q) in enumerate(zip(files, (1, 3, 2, 1))):
        for j in range(n_q):
            prompt = build_prompt(processor, [{"from": "human", "value": f"<image>\nIs picture {k} item {j} nice?"}])
            conts = [" A", " B", " C"][: 2 + (j % 2)] if mode == "first-token" else [" yes", " no way at all"]
            queries.append(Query(f"{k}-{j}", root / img, prompt, conts))
    scores = OptionScorer(model, processor, mode=mode, batch_images=3).score(queries)
    for q, s in zip(queries, scores):
        ref = _naive_logprobs(model, processor, q.image, q.prompt, q.continuations)
        assert s == pytest.approx(ref, abs=1e-4), q.key


def test_mean_reduce_divides_by_token_count(tiny, images):
    from aes_lib.evaluate.likelihood import OptionScorer, Query
    from aes_lib.models import build_prompt

    _, model, processor = tiny
    root, files = images
    prompt = build_prompt(processor, [{"from": "human", "value": "<image>\nDescribe it."}])
    q = [Query("x", root / files[0], prompt, [" yes", " no way at all"])]
    s_sum = OptionScorer(model, processor, mode="full", reduce="sum").score(q)[0]
    s_mean = OptionScorer(model, processor, mode="full", reduce="mean").score(q)[0]
    n_tokens = [len(processor.tokenizer(prompt[-48:] + c, add_special_tokens=False)["input_ids"])
                - len(processor.tokenizer(prompt[-48:], add_special_tokens=False)["input_ids"])
                for c in q[0].continuations]
    assert n_tokens[1] > 1
    assert s_mean == pytest.approx([a / n for a, n in zip(s_sum, n_tokens)], abs=1e-5)


def _train_to_answer(model, processor, image_root, items, letter: str, steps: int = 30):
    """Fine-tune every weight of the tiny model so that it answers ``letter`` to any question."""
    import torch
    from PIL import Image

    from aes_lib.evaluate.bench import mcq_prompt
    from aes_lib.models import build_prompt

    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    texts, imgs, n_prompt = [], [], []
    for it in items:
        turns = [{"from": "human", "value": "<image>\n" + mcq_prompt(it)}]
        prompt = build_prompt(processor, turns)
        full = build_prompt(processor, turns + [{"from": "gpt", "value": letter}], add_generation_prompt=False)
        texts.append(full)
        imgs.append(Image.open(image_root / it.image).convert("RGB"))
        n_prompt.append(len(processor(images=imgs[-1], text=prompt)["input_ids"][0]))
    processor.tokenizer.padding_side = "right"
    enc = processor(images=imgs, text=texts, return_tensors="pt", padding=True)
    labels = enc["input_ids"].clone()
    for i, n in enumerate(n_prompt):
        labels[i, :n] = -100
    labels[enc["attention_mask"] == 0] = -100
    torch.manual_seed(0)
    for _ in range(steps):
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def test_likelihood_and_generation_agree_on_a_model_that_prefers_b(tmp_path, images):
    from aes_lib.evaluate.answer import answer_local
    from aes_lib.models import build_tiny_llava, load_model_and_processor

    root, files = images
    model, processor = load_model_and_processor(build_tiny_llava(tmp_path / "m", seed=1))
    items = [_mcq(i, files[i % len(files)], n=3 + i % 2) for i in range(6)]
    loss = _train_to_answer(model, processor, root, items, "B")
    assert loss < 0.05
    lik = answer_local(items, model, processor, root, method="likelihood")
    gen = answer_local(items, model, processor, root, method="generate", max_new_tokens=4)
    assert [p["pred"] for p in lik] == ["B"] * len(items)
    assert [p["pred"] for p in gen] == ["B"] * len(items), [p["response"] for p in gen]
    assert all(p["parsed"] for p in gen)
    full = answer_local(items, model, processor, root, method="likelihood", mode="full", reduce="mean")
    assert all(len(p["scores"]) == len(it.options) for p, it in zip(full, items))


def _outputs(root: Path, files: list[str]) -> Path:
    """A minimal outputs/ folder: data/manifest.json (+ images) and critiques/critiques.jsonl."""
    out = root / "outputs"
    degs = ["blur", "none", "overexposed", "tilted"]
    recs = []
    for i, f in enumerate(files):
        recs.append(ImageRecord(id=f"im{i}", file=f, source_photo=f"p{i}", split="test",
                                source_package="pkg" + str(i % 2), category="object",
                                degradation=degs[i], strength=0.0 if degs[i] == "none" else 0.5,
                                traits={"subject": f"subject {i}", "mood": f"mood {i}",
                                        "palette": f"palette {i}"}).to_dict())
    from aes_lib.io import write_json

    write_json(out / "data" / "manifest.json", {"name": "t", "version": 1, "images": recs})
    crit = [Critique(id=f"c{i}{k}", image_id=f"im{i}", annotator=f"a{k}", annotator_kind="simulated",
                     protocol_version="v", grade=["good", "fair", "poor", "excellent"][i],
                     attributes={a: {"rating": 1 + (i + k) % 5, "word": None} for a in ATTRIBUTES},
                     description=f"A soft, balanced photo of subject {i} with warm light.")
            for i in range(len(files)) for k in range(2)]
    write_jsonl(out / "critiques" / "critiques.jsonl", crit)
    return out


@pytest.fixture()
def outputs(tmp_path, images):
    import shutil

    root, files = images
    out = _outputs(tmp_path, files)
    for f in files:
        (out / "data" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / f, out / "data" / f)
    return out


def test_cli_build_bench_and_run_writes_results_with_cis(outputs, tiny, capsys):
    import csv

    from aes_lib.cli import main

    model_path = tiny[0]
    assert main(["evaluate", "build-bench", "--out-dir", str(outputs)]) == 0
    bench = outputs / "eval" / "benchmark.jsonl"
    assert bench.exists()
    assert json.loads((outputs / "eval" / "benchmark_config.json").read_text())["seed"] == 0
    assert main(["evaluate", "run", "--model", str(model_path), "--name", "tiny-base",
                 "--out-dir", str(outputs)]) == 0
    assert main(["evaluate", "run", "--model", str(model_path), "--name", "tiny-gen",
                 "--method", "generate", "--out-dir", str(outputs)]) == 0
    assert main(["evaluate", "run", "--model", "tiny", "--limit", "5", "--out-dir", str(outputs)]) == 0
    assert (outputs / "eval" / "tiny_model" / "config.json").exists()
    printed = capsys.readouterr().out
    assert "tiny-base\tAesP\taccuracy" in printed and "overall[proxy-overlap]" in printed
    rows = list(csv.DictReader((outputs / "eval" / "results.csv").open()))
    assert set(rows[0]) == {"model", "dimension", "group_by", "group", "metric", "value", "ci_low", "ci_high", "n",
                            "annotator_kind"}
    assert {r["annotator_kind"] for r in rows if r["dimension"] in ("AesA", "AesI")} == {"simulated"}
    assert {r["model"] for r in rows} == {"tiny-base", "tiny-gen", "tiny"}
    assert {r["group_by"] for r in rows} >= {"all", "attribute", "qtype", "source"}
    for r in rows:
        assert float(r["ci_low"]) <= float(r["value"]) + 1e-9 <= float(r["ci_high"]) + 2e-9
    assert {r["group"] for r in rows if r["group_by"] == "source"} == {"pkg0", "pkg1"}
    res = json.loads((outputs / "eval" / "results_tiny-gen.json").read_text())
    assert res["judge"] == "proxy-overlap" and "not a GPT judge" in res["judge_note"]
    assert isinstance(res["unparsed"], list)
    preds = [json.loads(l) for l in (outputs / "eval" / "predictions_tiny-base.jsonl").open()]
    assert len(preds) == sum(1 for _ in bench.open())
    assert (outputs / "eval" / "config_tiny-base.json").exists()


def test_aesbench_layout_run_writes_responses_and_scores_with_key(tmp_path, tiny, images):
    from aes_lib.evaluate import EvalConfig, evaluate_model
    from aes_lib.evaluate.bench import read_aesbench_responses

    root, files = images
    ann = {f: {"AesP_data": {"Question": "Is it blurred?", "Options": "A. Yes\nB. No"},
               "AesA1_data": {"Question": "Aesthetic level?", "Options": "A. high\nB. medium\nC. low"},
               "AesI_data": {"Question": "Describe the aesthetics."}} for f in files[:2]}
    (root / "ann.json").write_text(json.dumps(ann))
    key = {f: {"AesP_answer": "A", "AesA1_answer": "medium", "AesI_reference": "soft warm light"} for f in files[:2]}
    (tmp_path / "key.json").write_text(json.dumps(key))
    cfg = EvalConfig(out_dir=str(tmp_path / "o"), bench=str(root / "ann.json"), key=str(tmp_path / "key.json"),
                     progress=False, n_boot=50)
    summary = evaluate_model(cfg, "tiny", loaded=tiny[1:])
    folder = tmp_path / "o" / "eval" / "responses_tiny"
    assert sorted(p.name for p in folder.iterdir()) == ["test_AesA1.json", "test_AesI.json", "test_AesP.json"]
    resp = read_aesbench_responses(folder)
    assert set(resp) == {f"{f}:{d}" for f in files[:2] for d in ("AesP", "AesA", "AesI")}
    # the likelihood method's reply is the chosen option as listed, never a bare letter
    assert all(resp[f"{f}:AesP"] in ("A. Yes", "B. No") for f in files[:2])
    assert all(resp[f"{f}:AesA"] in ("A. high", "B. medium", "C. low") for f in files[:2])
    dims = {r["dimension"] for r in summary["rows"]}
    assert dims == {"AesP", "AesA", "AesI"}


def test_score_dataset_gives_srcc_and_plcc(tmp_path, tiny, images):
    from aes_lib.evaluate import EvalConfig, evaluate_model

    root, files = images
    (root / "scores.json").write_text(json.dumps([{"image": f, "gt_score": 1.0 + i} for i, f in enumerate(files)]))
    cfg = EvalConfig(out_dir=str(tmp_path / "o"), bench=str(root / "scores.json"), progress=False, n_boot=50)
    summary = evaluate_model(cfg, "tiny", loaded=tiny[1:])
    metrics = {r["metric"]: r for r in summary["rows"]}
    assert set(metrics) == {"srcc", "plcc"}
    assert -1.0 <= metrics["srcc"]["value"] <= 1.0 and metrics["srcc"]["n"] == 4
    preds = [json.loads(l) for l in (tmp_path / "o" / "eval" / "predictions_tiny.jsonl").open()]
    for p in preds:
        assert 1.0 <= p["pred_score"] <= 5.0
        assert sum(p["grade_probs"].values()) == pytest.approx(1.0, abs=1e-4)


def test_api_model_and_api_judge_through_a_real_server(tmp_path, images):
    from fake_openai_server import start_server

    from aes_lib.evaluate import EvalConfig, evaluate_model
    from aes_lib.schema import write_jsonl as wj

    root, files = images
    items = [_mcq(0, files[0], answer="B"), _mcq(1, files[1], answer="A"),
             BenchItem(id="open", image=files[2], dimension="AesI", question="Describe it.",
                       reference="A calm photo with balanced composition.", source="src")]
    wj(tmp_path / "bench.jsonl", items)
    server = start_server(responder="fixtures_evaluate.eval_responder:respond")
    try:
        cfg = EvalConfig(out_dir=str(tmp_path / "o"), bench=str(tmp_path / "bench.jsonl"), image_root=str(root),
                         judge="api", judge_model="judge-model", base_url=server.base_url, progress=False,
                         n_boot=50)
        import os

        os.environ.setdefault("OPENAI_API_KEY", "test-key")
        summary = evaluate_model(cfg, "api-test", api_model="vision-model")
        n_requests = server.requests()
        evaluate_model(cfg, "api-test", api_model="vision-model")  # all from the cache
        assert server.requests() == n_requests
    finally:
        server.stop()
    assert n_requests == 4  # 3 answers + 1 judgement
    rows = {(r["dimension"], r["metric"]): r["value"] for r in summary["rows"] if r["group_by"] == "all"}
    assert rows[("AesP", "accuracy")] == 0.5
    assert rows[("AesI", "overall[api:judge-model]")] == pytest.approx(4 / 3, abs=1e-6)
    assert summary["judge"] == "api:judge-model"


def test_failed_api_answer_is_an_error_naming_the_item(tmp_path, images):
    import os

    from fake_openai_server import start_server

    from aes_lib.evaluate import EvalConfig, evaluate_model
    from aes_lib.schema import write_jsonl as wj

    root, files = images
    wj(tmp_path / "bench.jsonl", [_mcq(7, files[0])])
    os.environ.setdefault("OPENAI_API_KEY", "test-key")
    server = start_server(mode="500")
    try:
        cfg = EvalConfig(out_dir=str(tmp_path / "o"), bench=str(tmp_path / "bench.jsonl"), image_root=str(root),
                         base_url=server.base_url, progress=False, api_settings={"max_retries": 0})
        with pytest.raises(ValueError, match="'q7'"):
            evaluate_model(cfg, "api-fail", api_model="vision-model")
    finally:
        server.stop()


def test_generated_replies_carry_no_replacement_marks(tiny, images):
    """An untrained byte-level model emits bytes that never complete a character; the decoded
    reply drops the U+FFFD they would become (in evaluation's batched generation as in training's
    sample answers)."""
    from aes_lib.evaluate.answer import generate_texts
    from aes_lib.models import decode_reply

    _, model, processor = tiny
    tok = processor.tokenizer
    broken = tok("é", add_special_tokens=False)["input_ids"]
    assert len(broken) == 2 and "\ufffd" in tok.decode(broken[:1])   # half a character
    assert "\ufffd" not in decode_reply(tok, broken[:1] + tok(" ok", add_special_tokens=False)["input_ids"])
    root, names = images
    texts = generate_texts(model, processor, ["<image>\nDescribe the photo."] * 4,
                           [root / n for n in names], max_new_tokens=24, batch_size=4)
    assert len(texts) == 4 and not any("\ufffd" in t for t in texts)
