"""Instruction generation: offline backend, checks, exports, openai backend against a real server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aes_lib.cli import main as aes_main
from aes_lib.client import ClientConfig
from aes_lib.generate import GenerateConfig, check_draft, generate
from aes_lib.generate.offline import critique_defects, defect_mcqs, load_templates, rng_for
from aes_lib.schema import (GRADE_TO_LEVEL, Critique, Instruction, read_jsonl)
from fake_openai_server import start_server
from generate_fixtures import make_inputs

TESTS = Path(__file__).resolve().parent
SECRET = "sk-test-SECRET-generate-456"
T = load_templates("offline_v2")
EVAL_MCQ = (Path(__file__).resolve().parent.parent / "aes_lib" / "prompts" / "eval_mcq_v1.txt").read_text()
BAND = {1: "low", 2: "low", 3: "mid", 4: "high", 5: "high"}
HOW = {"high": "Good", "mid": "Average", "low": "Poor"}


@pytest.fixture
def inputs(tmp_path):
    make_inputs(tmp_path)
    return tmp_path


def load(out: Path) -> tuple[list[Instruction], dict[str, Critique], dict]:
    ins = read_jsonl(out / "instructions" / "instructions.jsonl", Instruction)
    crit = {c.id: c for c in read_jsonl(out / "critiques" / "critiques.jsonl", Critique)}
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    return ins, crit, {r["id"]: r for r in manifest["images"]}


def correct_text(ins: Instruction) -> str:
    return ins.options[ord(ins.answer) - ord("A")]


def agrees(ins: Instruction, c: Critique) -> bool:
    """Independent re-derivation of the correct answer from the critique."""
    if ins.type == "level_mcq":
        return correct_text(ins).lower() == GRADE_TO_LEVEL[c.grade]
    j = c.attributes[ins.attribute]
    if is_defect_item(ins):  # the fixtures' texts name no defect: only "no problem" items, rated high
        return BAND[j["rating"]] == "high" and correct_text(ins) in ("No", T["none_option"][ins.attribute])
    b = BAND[j["rating"]]
    text = correct_text(ins)
    q = ins.conversations[0]["value"].split("\n")[1]
    if ins.qtype == "how":
        return text == HOW[b]
    if ins.qtype == "yes-no":
        claim = next(x for x in ("good", "average", "poor") if f" {x}" in q)
        return (text == "Yes") == (claim == HOW[b].lower())
    word = text.removeprefix("Because its ").rstrip(".").split(" is ")[-1].lower()
    return word == (j["word"] or "").lower() or (not j["word"] and word in T["words"][ins.attribute][b])


def is_defect_item(ins: Instruction) -> bool:
    return ins.id.rsplit("-", 1)[-1][:1] == "d" and ins.id.rsplit("-", 1)[-1][1:].isdigit()


def test_offline_outputs_follow_the_contract(inputs):
    result = generate(GenerateConfig(), inputs, progress=False)
    out = inputs / "instructions"
    for name in ("instructions.jsonl", "llava_train.json", "llava_val.json", "llava_test.json",
                 "messages_train.jsonl", "messages_val.jsonl", "messages_test.jsonl", "stats.json",
                 "rejects.jsonl", "run.json", "refined.jsonl"):
        assert (out / name).exists(), name
    ins, crit, images = load(inputs)
    assert len(ins) == result["stats"]["n_instructions"] > 0
    assert len({i.id for i in ins}) == len(ins)
    types = {i.type for i in ins}
    assert types == {"perception_mcq", "empathy_mcq", "level_mcq", "description", "interpretation",
                     "suggestion", "conversation"}
    assert {i.qtype for i in ins if i.type.endswith("_mcq") and i.type != "level_mcq"} == \
        {"yes-no", "what", "how", "why"}
    # what notebook 02 shows: one example per type, all instructions, the rejects
    from aes_lib.generate import examples, read_instructions, read_rejects

    shown = examples(inputs, n=3)
    assert len(shown) == 3 and len({r["type"] for r in shown}) == 3
    llava = json.loads((out / "llava_train.json").read_text())
    assert shown[0]["human"] == llava[0]["conversations"][0]["value"]
    assert shown[0]["gpt"] == llava[0]["conversations"][1]["value"] and "<image>" in shown[0]["human"]
    assert [i.id for i in read_instructions(inputs)] == [i.id for i in ins]
    assert len(read_rejects(inputs)) == result["stats"]["n_rejected"]
    for i in ins:
        c = crit[i.critique_ids[0]]
        assert i.split == images[i.image_id]["split"] and i.image == images[i.image_id]["file"]
        assert (inputs / "data" / i.image).exists()
        assert i.prompt_version == "offline_v2" and i.generator == "offline"
        assert i.annotator_kind == "simulated"
        if i.options:
            assert len(set(i.options)) == len(i.options) >= 2
            assert i.conversations[1]["value"] == f"{i.answer}. {correct_text(i)}"
            for k, o in enumerate(i.options):
                assert f"\n{chr(65 + k)}. {o}\n" in i.conversations[0]["value"]
            # the evaluation's layout: its prompt file, question and options filled in
            lines = "\n".join(f"{chr(65 + k)}. {o}" for k, o in enumerate(i.options))
            q = i.conversations[0]["value"].removeprefix("<image>\n").split("\n")[0]
            assert i.conversations[0]["value"] == "<image>\n" + EVAL_MCQ.format(question=q, options=lines).strip()
            assert agrees(i, c), (i.id, i.conversations, c.attributes.get(i.attribute), c.grade)
    conv = [i for i in ins if i.type == "conversation"]
    assert all(len(i.conversations) >= 4 for i in conv)
    # every image's instructions sit in one split, and the splits follow the manifest
    llava = {s: json.loads((out / f"llava_{s}.json").read_text()) for s in ("train", "val", "test")}
    for s, rows in llava.items():
        assert all(images[r["id"].split("-")[1]]["split"] == s for r in rows)
        for r in rows:
            assert set(r) == {"id", "image", "conversations", "type", "qtype", "annotator_kind"}
            assert r["annotator_kind"] == "simulated"
            assert r["conversations"][0]["from"] == "human" and r["conversations"][0]["value"].startswith("<image>\n")
    assert sum(len(v) for v in llava.values()) == len(ins)
    msgs = [json.loads(x) for x in (out / "messages_val.jsonl").read_text().splitlines()]
    assert len(msgs) == len(llava["val"]) > 0
    for m in msgs:
        assert [t["role"] for t in m["messages"]][:2] == ["user", "assistant"]
        assert m["messages"][0]["content"].count("<image>") == 1 and len(m["images"]) == 1
    stats = json.loads((out / "stats.json").read_text())
    for key in ("counts_by_type", "counts_by_qtype", "counts_by_split", "question_lengths",
                "answer_lengths", "n_rejected", "prompt_version"):
        assert key in stats
    assert sum(stats["counts_by_type"].values()) == len(ins)
    assert sorted(stats["answer_lengths"]) == sorted(types)
    run = json.loads((out / "run.json").read_text())
    assert run["prompt_version"] == "offline_v2" and "offline_v2.yaml" in run["prompt_files"]
    assert any(is_defect_item(i) for i in ins)  # "no obvious problem" items of high-rated attributes
    assert run["generate_config"]["backend"] == "offline"


def test_offline_is_deterministic_and_seeded(inputs, tmp_path_factory):
    generate(GenerateConfig(), inputs, progress=False)
    first = (inputs / "instructions" / "instructions.jsonl").read_bytes()
    generate(GenerateConfig(), inputs, progress=False)
    assert (inputs / "instructions" / "instructions.jsonl").read_bytes() == first
    generate(GenerateConfig(seed=1), inputs, progress=False)
    assert (inputs / "instructions" / "instructions.jsonl").read_bytes() != first


def test_duplicates_are_removed_with_a_reason(tmp_path):
    make_inputs(tmp_path, n_photos=1, per_image=1)
    crit = read_jsonl(tmp_path / "critiques" / "critiques.jsonl", Critique)
    # twins of every critique: same judgments, other ids (and so other random wording): some of
    # their items come out word for word the same
    twins = [Critique.from_dict({**c.to_dict(), "id": c.id + "-twin"}) for c in crit]
    make_inputs(tmp_path, n_photos=1, per_image=1, extra_critiques=twins)
    result = generate(GenerateConfig(), tmp_path, progress=False)
    rejects = [json.loads(x) for x in (tmp_path / "instructions" / "rejects.jsonl").read_text().splitlines()]
    dups = [r for r in rejects if r["stage"] == "dedupe"]
    assert dups and all(r["reason"].startswith("duplicate of ") for r in dups)
    assert result["stats"]["n_rejected"] == len(rejects)
    ins = read_jsonl(tmp_path / "instructions" / "instructions.jsonl", Instruction)
    keys = [(i.image_id, json.dumps(i.conversations)) for i in ins]
    assert len(keys) == len(set(keys))


def test_unknown_image_is_an_error_unless_hash_split(inputs):
    extra = Critique(id="orphan-1", image_id="not-in-manifest", annotator="x", annotator_kind="imported",
                     protocol_version="import:pccd", grade="good",
                     attributes={"composition": {"rating": 4, "word": None}}, description="Nice lines.",
                     extra={"image": "http://example.org/a.jpg"})
    make_inputs(inputs, extra_critiques=[extra])
    with pytest.raises(ValueError, match="orphan-1.*not-in-manifest"):
        generate(GenerateConfig(), inputs, progress=False)
    generate(GenerateConfig(unlisted_images="hash_split"), inputs, progress=False)
    ins = [i for i in read_jsonl(inputs / "instructions" / "instructions.jsonl", Instruction)
           if i.image_id == "not-in-manifest"]
    assert ins and {i.image for i in ins} == {"http://example.org/a.jpg"}
    assert not [i for i in ins if i.type == "empathy_mcq"]  # no empathy judgments given


def test_check_draft_rejects_bad_items():
    c = Critique(id="c", image_id="i", annotator="a", annotator_kind="human", protocol_version="p",
                 grade="poor", attributes={"composition": {"rating": 5, "word": None}})
    good = {"type": "perception_mcq", "qtype": "how", "attribute": "composition",
            "options": ["Good", "Average", "Poor"], "correct": 0, "judgment": "positive"}
    assert check_draft(good, c, T) is None
    assert "unique" in check_draft({**good, "options": ["Good", "good", "Poor"]}, c, T)
    assert "not one of" in check_draft({**good, "correct": 3}, c, T)
    assert "negative" in check_draft({**good, "judgment": "negative"}, c, T)
    assert "not judged" in check_draft({**good, "attribute": "vibe"}, c, T)
    level = {"type": "level_mcq", "qtype": "level", "attribute": "", "options": ["High", "Medium", "Low"],
             "correct": 0, "judgment": ""}
    assert "disagrees" in check_draft(level, c, T)
    assert check_draft({**level, "correct": 2}, c, T) is None


def crit(cid: str, description: str, **ratings) -> Critique:
    attrs = {a: {"rating": r, "word": w} for a, (r, w) in ratings.items()}
    return Critique(id=cid, image_id="photo0__blur", annotator="a", annotator_kind="human",
                    protocol_version="p", grade="fair", attributes=attrs, description=description,
                    extra={"degradation": "tilted"})  # a recorded label the generator must not read


def test_critique_defects_come_from_the_text_only():
    named = lambda d, **r: critique_defects(crit("x", d, **r), T)  # noqa: E731
    assert named("Nice light. However, it suffers from blown highlights in the sky.") == (["overexposed"], False)
    assert named("The horizon is crooked and the shadows are murky.")[0] == ["tilted", "underexposed"]
    assert named("It is not blurry at all, and free of noise.") == ([], False)       # negated
    assert named("Exposure, colour and sharpness are all well handled.") == ([], True)
    assert named("A documentary record of artefacts.") == ([], False)                 # no defect cue
    # no defect in the text: a low-rated attribute's word may name one; a high one never does
    low = {"technical_quality": (2, "blurry")}
    assert named("A quiet street.", **low) == (["blur"], False)
    assert named("A quiet street.", technical_quality=(5, "noisy")) == ([], False)
    assert named("It suffers from heavy grainy noise.", **low) == (["noise"], False)  # the text wins
    assert critique_defects(crit("x", "Blown highlights."), load_templates("offline_v1")) == ([], False)


def test_defect_items_take_their_answer_from_the_critique():
    c = crit("c1", "The main problem is underexposure that leaves the frame dark and muddy.",
             technical_quality=(2, "flawed"), color_light=(1, "dull"), composition=(4, "strong"))
    drafts = defect_mcqs(c, T, rng_for(0, c.id, "defects"), limit=10)
    assert {(d["attribute"], d["qtype"]) for d in drafts} == {
        ("color_light", "yes-no"), ("color_light", "what"), ("color_light", "why")}
    names = {k: v["name"] for k, v in T["defects"].items()}
    for d in drafts:
        opts = d["options"]
        assert len(set(opts)) == len(opts) >= 2 and 0 <= d["correct"] < len(opts)
        assert check_draft(d, c, T) is None
        right = opts[d["correct"]]
        if d["qtype"] == "what":
            assert right == "underexposed" and set(opts) - {right} <= {
                names[k] for k in ("overexposed", "color_cast", "desaturated")} | {T["none_option"]["color_light"]}
        elif d["qtype"] == "why":
            assert right == "because it is underexposed"
            assert all(o.startswith("because it is ") and o != right for o in opts if o != right)
        else:
            assert (right == "Yes") == (names["underexposed"] in d["question"])
        assert d["question"] not in d["options"] and "tilted" not in right  # not the recorded label
        bad = {**d, "correct": (d["correct"] + 1) % len(opts)}
        reason = check_draft(bad, c, T)
        assert "disagrees with the critique" in reason or reason.startswith("contradicts the critique")
    # a clean critique: "no obvious problem" only where it says so; nothing asked otherwise
    clean = crit("c2", "It is technically clean and pleasing to look at.", technical_quality=(3, "decent"),
                 color_light=(3, "plain"), composition=(2, "awkward"))
    drafts = defect_mcqs(clean, T, rng_for(0, "c2"), limit=10)
    assert {d["attribute"] for d in drafts} == {"technical_quality", "color_light"}
    for d in drafts:
        right = d["options"][d["correct"]]
        assert right in ("No", T["none_option"][d["attribute"]]) and check_draft(d, clean, T) is None
    silent = crit("c3", "A street at dusk.", technical_quality=(3, None), color_light=(2, "dull"))
    assert defect_mcqs(silent, T, rng_for(0, "c3"), limit=10) == []
    assert len(defect_mcqs(c, T, rng_for(0, "c1"), limit=2)) == 2


def test_v1_templates_stay_loadable_with_their_own_layout(inputs):
    generate(GenerateConfig(prompt_version="v1"), inputs, progress=False)
    ins = read_jsonl(inputs / "instructions" / "instructions.jsonl", Instruction)
    mcq = [i for i in ins if i.options]
    assert mcq and all(i.prompt_version == "offline_v1" for i in ins)
    assert not any(is_defect_item(i) for i in ins)
    assert all(i.conversations[0]["value"].endswith("Answer with the letter and the text of the correct option.")
               for i in mcq)


def test_cli_offline_and_config_errors(inputs, capsys):
    assert aes_main(["generate", "--backend", "offline", "--out", str(inputs), "--no-progress"]) == 0
    assert "instructions from 24 critiques" in capsys.readouterr().out
    assert aes_main(["generate", "--out", str(inputs / "nowhere")]) == 2
    assert "critiques.jsonl: file not found" in capsys.readouterr().err


# --- openai backend against the fake server ---------------------------------------------------

@pytest.fixture(scope="module")
def llm_server():
    with start_server(responder="fake_generate_responder:respond") as s:
        yield s


@pytest.fixture
def llm(llm_server, monkeypatch):
    llm_server.control(mode="ok", latency_ms=0, fail_count=1)
    llm_server.reset()
    monkeypatch.setenv("AES_GEN_KEY", SECRET)
    return llm_server


def client_cfg(server, **kw) -> ClientConfig:
    return ClientConfig.from_dict({"base_url": server.base_url, "model": "fake-gpt",
                                   "api_key_env": "AES_GEN_KEY", "backoff_base_s": 0.01,
                                   "max_retries": 1, "max_reasks": 1, "input_price_per_mtok": 0.15,
                                   "output_price_per_mtok": 0.60, **kw})


def test_openai_backend_end_to_end(llm, tmp_path):
    bad = Critique(id="bad-one", image_id="photo0__original", annotator="x", annotator_kind="human",
                   protocol_version="p", grade="good",
                   attributes={"composition": {"rating": 5, "word": "strong"}},
                   description="Strong diagonal lines [[bad-item]] carry the eye.")
    make_inputs(tmp_path, n_photos=2, per_image=1, extra_critiques=[bad])
    result = generate(GenerateConfig(backend="openai"), tmp_path,
                      client_cfg(llm, api_key_env="AES_UNSET_VARIABLE"), progress=False,
                      api_key=SECRET)  # a key given as a parameter is kept in memory only
    n_crit = 5
    assert llm.requests() == 2 * n_crit  # one refine and one assemble per critique
    body = llm.stats()["last_body"]
    ins, crit, _ = load(tmp_path)
    assert ins and all(i.generator == "openai:fake-gpt" for i in ins)
    assert all(i.prompt_version == "refine_v2+assemble_v2" for i in ins)
    for i in ins:
        if i.type == "level_mcq":
            assert agrees(i, crit[i.critique_ids[0]])
    rejects = [json.loads(x) for x in (tmp_path / "instructions" / "rejects.jsonl").read_text().splitlines()]
    bad_rejects = [r for r in rejects if r["critique_id"] == "bad-one" and r["stage"] == "check"]
    assert len(bad_rejects) == 1 and "'negative' judgment of composition" in bad_rejects[0]["reason"]
    run = json.loads((tmp_path / "instructions" / "run.json").read_text())
    assert run["usage"]["requests_sent"] == 2 * n_crit and run["usage"]["total_tokens"] > 0
    assert run["usage"]["cost_usd"] > 0 and run["client_config"]["api_key_env"] == "AES_UNSET_VARIABLE"
    assert body["model"] == "fake-gpt"
    # the refine prompt carries the image as a data URL
    assert result["stats"]["generator"] == "openai:fake-gpt"
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p
    # a rerun is served from the cache
    generate(GenerateConfig(backend="openai"), tmp_path, client_cfg(llm), progress=False)
    assert llm.requests() == 2 * n_crit


def test_openai_refine_sends_image_and_failures_become_rejects(llm, tmp_path):
    make_inputs(tmp_path, n_photos=1, per_image=1)
    llm.control(mode="non_json")
    with pytest.raises(ValueError, match="no instruction came out of 2 critiques.*invalid reply"):
        generate(GenerateConfig(backend="openai"), tmp_path, client_cfg(llm), progress=False)
    first = llm.stats()["last_body"]["messages"][1]["content"]
    assert first[1]["image_url"]["url"].startswith("data:image/png;base64,")
    rejects = [json.loads(x) for x in (tmp_path / "instructions" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 2 and all(r["stage"] == "refine" for r in rejects)
    assert all("invalid reply after 2 tries" in r["reason"] for r in rejects)
    stats = json.loads((tmp_path / "instructions" / "stats.json").read_text())
    assert stats["n_instructions"] == 0 and llm.requests() == 4


def test_batch_export_import_then_generate_sends_nothing(llm, tmp_path, capsys):
    sys.path.insert(0, str(TESTS))
    from fake_generate_responder import respond

    make_inputs(tmp_path, n_photos=1, per_image=1)
    common = ["--out", str(tmp_path), "--base-url", llm.base_url, "--model", "fake-gpt",
              "--api-key-env", "AES_GEN_KEY"]
    for step in ("refine", "assemble"):
        batch = tmp_path / f"{step}_requests.jsonl"
        assert aes_main(["generate", "batch-export", "--file", str(batch), *common]) == 0
        assert capsys.readouterr().out.startswith(f"{step}: wrote 2 requests")
        rows = [json.loads(x) for x in batch.read_text().splitlines()]
        assert {r["custom_id"].split(":")[0] for r in rows} == {step}
        results = tmp_path / f"{step}_results.jsonl"
        results.write_text("".join(json.dumps({"custom_id": r["custom_id"], "response": {
            "status_code": 200, "body": {"choices": [{"message": {"content": respond(r["body"])}}],
                                          "usage": {"prompt_tokens": 10, "completion_tokens": 5}}}})
            + "\n" for r in rows))
        assert aes_main(["generate", "batch-import", "--file", str(results), *common]) == 0
        assert "imported 2" in capsys.readouterr().out
    assert aes_main(["generate", "--backend", "openai", "--no-progress", *common]) == 0
    assert llm.requests() == 0
    ins = read_jsonl(tmp_path / "instructions" / "instructions.jsonl", Instruction)
    assert ins and all(i.generator == "openai:fake-gpt" for i in ins)


def test_dry_run_estimates_without_sending(llm, tmp_path, capsys):
    make_inputs(tmp_path, n_photos=1, per_image=2)
    assert aes_main(["generate", "--backend", "openai", "--dry-run", "--out", str(tmp_path),
                     "--base-url", llm.base_url, "--api-key-env", "AES_GEN_KEY"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["refine"]["to_send"] == 4 and est["assemble"]["to_send"] == 4
    assert est["total_cost_usd"] > 0 and llm.requests() == 0


@pytest.mark.slow
def test_killed_run_resumes_without_loss_duplicates_or_resends(llm, tmp_path):
    make_inputs(tmp_path, n_photos=6, per_image=2)  # 24 critiques -> 48 requests
    llm.control(latency_ms=150)
    cmd = [sys.executable, "-m", "aes_lib.cli", "generate", "--backend", "openai", "--out", str(tmp_path),
           "--base-url", llm.base_url, "--model", "fake-gpt", "--api-key-env", "AES_GEN_KEY",
           "--concurrency", "2", "--no-progress"]
    env = {**os.environ, "AES_GEN_KEY": SECRET}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while llm.requests() < 14 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    sent_before = llm.requests()
    assert 14 <= sent_before < 48, "the run must be killed midway"
    assert not (tmp_path / "instructions" / "instructions.jsonl").exists()
    with sqlite3.connect(tmp_path / "instructions" / "llm_cache.sqlite") as db:
        cached = {h for (h,) in db.execute("SELECT messages_sha256 FROM replies")}
    assert 0 < len(cached) <= sent_before
    llm.control(latency_ms=0)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    by_hash = llm.stats()["by_hash"]
    assert all(by_hash[h] == 1 for h in cached), "a cached request was sent again"
    assert len(by_hash) == 48  # every distinct request reached the server
    assert llm.requests() - 48 <= 2  # resent: at most the 2 in flight at the kill
    ins = read_jsonl(tmp_path / "instructions" / "instructions.jsonl", Instruction)
    assert len({i.id for i in ins}) == len(ins)  # none duplicated
    crit = read_jsonl(tmp_path / "critiques" / "critiques.jsonl", Critique)
    assert {i.critique_ids[0] for i in ins} == {c.id for c in crit}  # none lost
    # same result as an uninterrupted run
    fresh = tmp_path / "fresh"
    make_inputs(fresh, n_photos=6, per_image=2)
    generate(GenerateConfig(backend="openai"), fresh, client_cfg(llm), progress=False)
    assert (fresh / "instructions" / "instructions.jsonl").read_bytes() == \
        (tmp_path / "instructions" / "instructions.jsonl").read_bytes()


def test_free_text_never_invents_words(tmp_path):
    """Without an annotator's word, free-text answers use the plain band label."""
    c = Critique(id="c1", image_id="photo0__original", annotator="a", annotator_kind="imported",
                 protocol_version="p", grade="good",
                 attributes={"composition": {"rating": 5, "word": None},
                             "color_light": {"rating": 1, "word": None}},
                 description="<b>Hi John!</b> nice   lines..", suggestion="")
    make_inputs(tmp_path, n_photos=1, per_image=0, extra_critiques=[c])
    generate(GenerateConfig(), tmp_path, progress=False)
    ins = {i.type: i for i in read_jsonl(tmp_path / "instructions" / "instructions.jsonl", Instruction)}
    answer = {k: v.conversations[1]["value"] for k, v in ins.items()}
    assert answer["interpretation"] == ("The image has high aesthetic quality. Its strengths: good composition. "
                                        "Its weaknesses: poor color and light.")
    assert answer["suggestion"] == "Improve the color and light, which is poor."
    assert answer["description"] == "Nice lines. Overall, the image is good, with high aesthetic quality."
    assert ins["conversation"].conversations[3]["value"] == "The composition: it is good."


def test_max_critiques_spreads_over_the_splits(inputs):
    result = generate(GenerateConfig(max_critiques=6), inputs, progress=False)
    assert result["stats"]["n_critiques"] == 6
    assert all(n > 0 for n in result["stats"]["counts_by_split"].values())


def test_mcq_items_are_laid_out_as_the_benchmark_with_options_in_random_order(inputs):
    from collections import Counter

    generate(GenerateConfig(prompt_version="v2"), inputs, progress=False)
    ins, crit, _ = load(inputs)
    mcq = [i for i in ins if i.options]
    assert len(mcq) >= 60
    for i in mcq:
        listed = "\n".join(f"{chr(65 + k)}. {o}" for k, o in enumerate(i.options))
        question = i.conversations[0]["value"].split("\n")[1]
        assert i.conversations[0]["value"] == "<image>\n" + EVAL_MCQ.format(question=question, options=listed).strip()
        assert i.conversations[1]["value"] == f"{i.answer}. {correct_text(i)}"
        assert agrees(i, crit[i.critique_ids[0]])  # shuffling kept the answer on the right option text
    # the position says nothing: answers fall on every letter, and each ordered scale comes in several orders
    yes_no = [i for i in mcq if i.qtype == "yes-no"]
    assert {tuple(i.options) for i in yes_no} == {("Yes", "No"), ("No", "Yes")}
    share_a = Counter(i.answer for i in yes_no)["A"] / len(yes_no)
    assert 0.3 < share_a < 0.7, share_a
    for qtype in ("how", "level"):
        items = [i for i in mcq if i.qtype == qtype]
        assert len({tuple(i.options) for i in items}) >= 3, qtype
        assert set(Counter(i.answer for i in items)) == {"A", "B", "C"}, qtype
    letters = Counter(i.answer for i in mcq)
    assert max(letters.values()) / len(mcq) < 0.45, letters


def test_v1_keeps_its_fixed_option_order():
    assert load_templates("offline_v1")["option_order"] == "fixed" and T["option_order"] == "shuffled"
    from aes_lib.generate.offline import shuffle_options

    d = {"options": ["Yes", "No"], "correct": 1}
    orders = set()
    for k in range(20):
        e = dict(d)
        shuffle_options(e, rng_for(k, "x"))
        orders.add(tuple(e["options"]))
        assert e["options"][e["correct"]] == "No"
    assert orders == {("Yes", "No"), ("No", "Yes")}


def test_dry_run_prices_each_model_or_says_the_price_is_unknown(llm, tmp_path, capsys):
    """Notebook 02's exercise: gpt-4o is not priced as gpt-4o-mini; an unknown model gets no cost."""
    from aes_lib.generate import describe_estimate

    make_inputs(tmp_path, n_photos=1, per_image=2)
    est = {}
    for model in ("gpt-4o-mini", "gpt-4o", "my-local-llava"):
        assert aes_main(["generate", "--backend", "openai", "--dry-run", "--out", str(tmp_path), "--model", model,
                         "--base-url", llm.base_url, "--api-key-env", "AES_GEN_KEY"]) == 0
        est[model] = json.loads(capsys.readouterr().out)
    assert est["gpt-4o"]["total_cost_usd"] > 10 * est["gpt-4o-mini"]["total_cost_usd"] > 0
    assert est["my-local-llava"]["total_cost_usd"] is None
    assert "gpt-4o list price" in describe_estimate(est["gpt-4o"], "gpt-4o")
    line = describe_estimate(est["my-local-llava"], "my-local-llava")
    assert "unknown, price unknown for model 'my-local-llava'" in line and "$" not in line
    assert llm.requests() == 0


def test_critiques_of_photos_the_rebuilt_dataset_dropped_name_the_real_cause(inputs):
    """Notebook 00's exercise rebuilds the dataset with three photos; the store's critiques still
    name the others: the error says so and how to go back, not to pass --manifest none."""
    manifest = json.loads((inputs / "data" / "manifest.json").read_text())
    manifest["images"] = [r for r in manifest["images"] if r["source_photo"] == "photo0"]
    (inputs / "data" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError) as err:
        generate(GenerateConfig(), inputs, progress=False)
    msg = str(err.value)
    assert "20 of 24 critiques (20 simulated) name 10 images the dataset no longer has" in msg
    assert "photos = []" in msg and "--manifest none" not in msg
