"""AesBench exactly: the official prompt strings and response files, checked against a
reimplementation of the official scripts' construction written from their published strings."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from aes_lib.evaluate import bench as B

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# --- the official construction, reimplemented from AesBench's published strings ---------------
# eval_AesP.py / eval_AesE.py: Question + " Choose one from the following options:\n" + Options
#   + "\nYou should output a correct option without explanation."
# eval_AesA1.py: the same, ending "\nYou should output a correct option."
# eval_AesI.py: the bare Question.
# Each script writes json.dumps(answers, indent=4) to test_<Dim>.json, answers[image] =
# {"<Dim>_response": reply}, images in the annotation file's order, reply = text.strip().

REFERENCE_ENDINGS = {"AesP": "\nYou should output a correct option without explanation.",
                     "AesE": "\nYou should output a correct option without explanation.",
                     "AesA1": "\nYou should output a correct option."}


def reference_prompt(label: dict, dim: str) -> str:
    block = label[f"{dim}_data"]
    if dim == "AesI":
        return block["Question"]
    return block["Question"] + " Choose one from the following options:\n" + block["Options"] \
        + REFERENCE_ENDINGS[dim]


def reference_files(annotation: dict, reply_of, folder: Path) -> None:
    """The four response files as the official scripts write them (text mode, LF line ends)."""
    folder.mkdir(parents=True, exist_ok=True)
    for dim in ("AesP", "AesE", "AesA1", "AesI"):
        answers = {}
        for image, label in annotation.items():
            answers[image] = {f"{dim}_response": reply_of(image, dim)}
        with open(folder / f"test_{dim}.json", "w", newline="\n") as outfile:
            outfile.write(json.dumps(answers, indent=4))


# every option style, odd whitespace, curly quotes, non-ASCII text and image names, CRLF lines,
# blank lines, a trailing newline, braces (no format() anywhere), an options list
TRICKY = {
    "z_first_in_file.jpg": {
        "AesP_data": {"Question": "  Is the horizon  level?\t ", "Options": "A.Yes\nB.No"},
        "AesE_data": {"Question": "Does the photo feel \u201ccalm\u201d \u2014 or \u2018tense\u2019?",
                      "Options": "A) calm\nB) tense\nC) neither"},
        "AesA1_data": {"Question": "How is the aesthetic quality of this image?",
                       "Options": "A. High\nB. Medium\nC. Low\n"},
        "AesI_data": {"Question": "Please describe the aesthetics of this image in detail.\n"},
    },
    "\u00e9t\u00e9_caf\u00e9_\u5199\u771f.png": {
        "AesP_data": {"Question": "Wie ist die Komposition? \u69cb\u56f3\u306f\uff1f {not a field}",
                      "Options": "A. gut  \r\nB. schlecht\r\nC. \u00fcberladen"},
        "AesE_data": {"Question": "Is it \"unique\"?", "Options": "(A) Yes\n\n(B) No"},
        "AesA1_data": {"Question": "Level?", "Options": "A: high\nB: medium\nC: low"},
        "AesI_data": {"Question": "  \u00bfQu\u00e9 transmite esta foto?  "},
    },
    "a_last_in_file.jpg": {
        "AesP_data": {"Question": "Is the image noisy?", "Options": ["A. Yes", "B. No"]},
        "AesE_data": {"Question": "Mood?", "Options": "A. \u2018moody\u2019\nB. cheerful \U0001f600"},
        "AesA1_data": {"Question": "Quality?", "Options": "A. good\nB. fair\nC. poor"},
        "AesI_data": {"Question": "Interpret the image."},
    },
}
DIM_OF = {"AesP": "AesP", "AesE": "AesE", "AesA1": "AesA", "AesI": "AesI"}


def _annotation_file(tmp_path: Path) -> Path:
    path = tmp_path / "AesBench_evaluation.json"
    path.write_text(json.dumps(TRICKY, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def _as_official(label: dict, dim: str) -> dict:
    """The official scripts need Options as a string; a list is read as its lines."""
    block = dict(label[f"{dim}_data"])
    if isinstance(block.get("Options"), list):
        block["Options"] = "\n".join(block["Options"])
    return {**label, f"{dim}_data": block}


def test_prompts_equal_the_official_construction_byte_for_byte(tmp_path):
    from aes_lib.evaluate.answer import _human_value, api_messages

    items = {it.id: it for it in B.load_aesbench(_annotation_file(tmp_path))}
    assert len(items) == 12
    template = B.prompt_file("eval_mcq_v1.txt")
    image = tmp_path / "x.png"
    _png(image)
    for image_name, label in TRICKY.items():
        for dim, ours in DIM_OF.items():
            item = items[f"{image_name}:{ours}"]
            expected = reference_prompt(_as_official(label, dim), dim)
            sent = api_messages(item, image, template)[0]["content"][0]["text"]
            assert sent == expected, (image_name, dim)
            assert sent.encode("utf-8") == expected.encode("utf-8")
            # local models get the same text after the image placeholder
            assert _human_value(item, template) == "<image>\n" + expected
    # spot checks that the test data really is tricky (so equality above means something)
    assert items["z_first_in_file.jpg:AesP"].question == "  Is the horizon  level?\t "
    assert "A.Yes\nB.No\n" in B.mcq_prompt(items["z_first_in_file.jpg:AesP"])
    assert items["\u00e9t\u00e9_caf\u00e9_\u5199\u771f.png:AesP"].options == ["gut", "schlecht", "\u00fcberladen"]
    assert B.mcq_prompt(items["a_last_in_file.jpg:AesA"]).endswith(
        "C. poor\nYou should output a correct option.")


def test_listed_option_is_the_options_line_as_given(tmp_path):
    items = {it.id: it for it in B.load_aesbench(_annotation_file(tmp_path))}
    listed = lambda item_id: [B.listed_option(items[item_id], i)  # noqa: E731
                              for i in range(len(items[item_id].options))]
    assert listed("z_first_in_file.jpg:AesP") == ["A.Yes", "B.No"]
    assert listed("z_first_in_file.jpg:AesE") == ["A) calm", "B) tense", "C) neither"]
    assert listed("\u00e9t\u00e9_caf\u00e9_\u5199\u771f.png:AesP") == ["A. gut", "B. schlecht", "C. \u00fcberladen"]
    assert listed("\u00e9t\u00e9_caf\u00e9_\u5199\u771f.png:AesE") == ["(A) Yes", "(B) No"]
    assert listed("\u00e9t\u00e9_caf\u00e9_\u5199\u771f.png:AesA") == ["A: high", "B: medium", "C: low"]
    assert listed("a_last_in_file.jpg:AesP") == ["A. Yes", "B. No"]
    # each listed line names its own option for the extractor (so scoring reads it back)
    from aes_lib.evaluate.extract import extract_option

    for it in items.values():
        for i in range(len(it.options)):
            assert extract_option(B.listed_option(it, i), it.options) == chr(65 + i), (it.id, i)


def test_project_items_keep_the_project_template():
    from aes_lib.schema import BenchItem

    item = BenchItem(id="q", image="i.png", dimension="AesP", question="Is it blurred?", options=["Yes", "No"])
    assert B.mcq_prompt(item) == ("Is it blurred?\nChoose one from the following options:\nA. Yes\nB. No\n"
                                  "Answer with the option's letter from the given choices directly.")
    assert B.listed_option(item, 1) == "B. No"


def _png(path: Path, seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


# --- response files -------------------------------------------------------------------------------

REPLIES = ["B.No", "The answer is \u201cA\u201d \u2014 calm.", "C. Low", "  padded reply  ",
           "Line one.\nLine two with a tab\tand \"quotes\" and \\ a backslash.",
           "\u5199\u771f\u306f\u7f8e\u3057\u3044 \U0001f600 caf\u00e9"]


def _reply(image: str, dim: str) -> str:
    return REPLIES[(list(TRICKY).index(image) * 4 + list(DIM_OF).index(dim)) % len(REPLIES)]


def test_response_files_equal_the_official_files_byte_for_byte(tmp_path):
    items = B.load_aesbench(_annotation_file(tmp_path))
    responses = {it.id: _reply(it.image, {v: k for k, v in DIM_OF.items()}[it.dimension]) for it in items}
    written = B.write_official_responses(tmp_path / "ours", items, responses)
    reference_files(TRICKY, _reply, tmp_path / "official")
    assert sorted(p.name for p in written) == ["test_AesA1.json", "test_AesE.json", "test_AesI.json",
                                               "test_AesP.json"]
    for name in ("test_AesP.json", "test_AesE.json", "test_AesA1.json", "test_AesI.json"):
        ours, official = (tmp_path / "ours" / name).read_bytes(), (tmp_path / "official" / name).read_bytes()
        assert ours == official, name
        assert ours.isascii() and not ours.endswith(b"\n") and b"\\u00e9t\\u00e9" in ours
    # images keep the annotation file's order (not sorted)
    assert list(json.loads((tmp_path / "ours" / "test_AesP.json").read_text())) == list(TRICKY)
    # and the files read back to the same replies
    assert B.read_aesbench_responses(tmp_path / "official") == responses
    # a rerun of fewer dimensions leaves no file of the earlier run behind to be scored with it
    only_p = {k: v for k, v in responses.items() if k.endswith(":AesP")}
    assert only_p and len(only_p) < len(responses)
    B.write_official_responses(tmp_path / "ours", items, only_p)
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["test_AesP.json"]


def test_api_run_sends_official_prompts_and_writes_official_files(tmp_path):
    """Through a real server process: the echoed prompt is what arrived; the files written from
    those replies equal the official files written from the same replies."""
    from fake_openai_server import start_server

    from aes_lib.evaluate import EvalConfig, evaluate_model

    ann = _annotation_file(tmp_path)
    for i, image in enumerate(TRICKY):
        _png(tmp_path / image, i)
    os.environ.setdefault("OPENAI_API_KEY", "test-key")
    server = start_server(responder="fixtures_evaluate.echo_responder:respond")
    try:
        cfg = EvalConfig(out_dir=str(tmp_path / "o"), bench=str(ann), base_url=server.base_url,
                         progress=False, n_boot=20)
        evaluate_model(cfg, "echo", api_model="vision-model")
        assert server.requests() == 12
    finally:
        server.stop()
    # the official scripts keep reply.strip(); the echoed reply is the prompt that arrived
    reference_files(TRICKY, lambda image, dim: reference_prompt(_as_official(TRICKY[image], dim), dim).strip(),
                    tmp_path / "official")
    ours = tmp_path / "o" / "eval" / "responses_echo"
    for name in ("test_AesP.json", "test_AesE.json", "test_AesA1.json", "test_AesI.json"):
        assert (ours / name).read_bytes() == (tmp_path / "official" / name).read_bytes(), name


def test_score_reads_the_four_official_files_directly(tmp_path, capsys):
    from aes_lib.cli import main
    from aes_lib.evaluate.run import score_aesbench

    ann = _annotation_file(tmp_path)
    key = {image: {"AesP_answer": "A", "AesE_answer": "B", "AesA1_answer": "C",
                   "AesI_reference": "a calm photo"} for image in TRICKY}
    (tmp_path / "key.json").write_text(json.dumps(key))
    # official-way files: AesP all right ("A..."), AesE all wrong, AesA1 two of three right
    replies = {"AesP": lambda i: "A", "AesE": lambda i: "A", "AesA1": lambda i: "C" if i < 2 else "A",
               "AesI": lambda i: "A calm photo."}
    reference_files(TRICKY, lambda image, dim: replies[dim](list(TRICKY).index(image)) + ". reply",
                    tmp_path / "official")
    accuracy = lambda s: {r["dimension"]: r["value"] for r in s["rows"]  # noqa: E731
                          if r["group_by"] == "all" and r["metric"] == "accuracy"}
    by_folder = score_aesbench(tmp_path / "official", tmp_path / "key.json", bench=ann)
    assert accuracy(by_folder) == {"AesP": 1.0, "AesE": 0.0, "AesA": pytest.approx(2 / 3, abs=1e-6)}
    assert by_folder["model"] == "official" and by_folder["n_items"] == 12
    files = [tmp_path / "official" / f for f in ("test_AesP.json", "test_AesE.json", "test_AesA1.json",
                                                 "test_AesI.json")]
    assert accuracy(score_aesbench(files, tmp_path / "key.json", bench=ann)) == accuracy(by_folder)
    # one file alone scores its dimension only
    assert set(accuracy(score_aesbench(files[0], tmp_path / "key.json", bench=ann))) == {"AesP"}
    assert score_aesbench([files[0]], tmp_path / "key.json", bench=ann)["model"] == "test_AesP"
    rc = main(["evaluate", "score", "--responses", *map(str, files[:2]), "--key", str(tmp_path / "key.json"),
               "--bench", str(ann), "--name", "two"])
    out = capsys.readouterr().out
    assert rc == 0 and "two\tAesP\taccuracy\t1.0000" in out and "two\tAesE\taccuracy\t0.0000" in out
    # the same field in two files is an error naming both
    (tmp_path / "dup").mkdir()
    (tmp_path / "dup" / "test_AesP.json").write_bytes(files[0].read_bytes())
    with pytest.raises(ValueError, match="AesP_response.*also in"):
        B.read_aesbench_responses([tmp_path / "official", tmp_path / "dup"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="none of the response files"):
        B.read_aesbench_responses(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not found"):
        B.read_aesbench_responses(tmp_path / "missing")


# --- API settings of the evaluation CLI -----------------------------------------------------------

def test_evaluate_run_api_key_env_names_the_variable(tmp_path, monkeypatch, capsys):
    from fake_openai_server import start_server

    from aes_lib.cli import main

    ann = _annotation_file(tmp_path)
    for i, image in enumerate(TRICKY):
        _png(tmp_path / image, i)
    monkeypatch.setenv("AES_EVAL_TEST_KEY", "key-from-the-named-variable")
    monkeypatch.setenv("OPENAI_API_KEY", "the-default-variable")
    server = start_server(responder="fixtures_evaluate.echo_responder:respond")
    try:
        rc = main(["evaluate", "run", "--api", "vision-model", "--bench", str(ann), "--base-url",
                   server.base_url, "--api-key-env", "AES_EVAL_TEST_KEY", "--out-dir", str(tmp_path / "o"),
                   "--limit", "1"])
        assert rc == 0 and server.stats()["last_authorization"] == "Bearer key-from-the-named-variable"
    finally:
        server.stop()
    saved = json.loads((tmp_path / "o" / "eval" / "config_api-vision-model.json").read_text())
    assert saved["api_key_env"] == "AES_EVAL_TEST_KEY" and "key-from" not in json.dumps(saved)
    # against api.openai.com an unset variable is an error naming it, before anything is sent
    monkeypatch.delenv("AES_EVAL_TEST_KEY")
    capsys.readouterr()
    rc = main(["evaluate", "run", "--api", "vision-model", "--bench", str(ann), "--api-key-env",
               "AES_EVAL_TEST_KEY", "--out-dir", str(tmp_path / "o2"), "--limit", "1"])
    assert rc != 0 and "AES_EVAL_TEST_KEY is not set" in capsys.readouterr().err


def test_evaluate_run_stops_at_a_litellm_unknown_model_reply(tmp_path, monkeypatch):
    from fake_openai_server import start_server

    from aes_lib.client import FatalAPIError
    from aes_lib.evaluate import EvalConfig, evaluate_model

    ann = _annotation_file(tmp_path)
    for i, image in enumerate(TRICKY):
        _png(tmp_path / image, i)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    server = start_server(mode="400_model")
    try:
        cfg = EvalConfig(out_dir=str(tmp_path / "o"), bench=str(ann), base_url=server.base_url,
                         progress=False, api_settings={"concurrency": 1, "max_retries": 3})
        with pytest.raises(FatalAPIError, match="HTTP 400.*Invalid model name"):
            evaluate_model(cfg, "litellm", api_model="no-such-model")
        assert server.requests() == 1   # not 12 requests, each refused in turn
    finally:
        server.stop()


# --- short replies: asked again like the official scripts, within a limit --------------------------

def test_api_short_replies_are_asked_again_with_the_official_prompt(tmp_path, monkeypatch, caplog):
    """Each first reply is "B": the official loop asks the same prompt again; the files equal the
    official ones from the final replies. At the limit the last reply is kept, counted, logged and
    cached; the project's own setting (1 try) sends each prompt once."""
    from fake_openai_server import start_server

    from aes_lib.evaluate import EvalConfig, evaluate_model

    ann = _annotation_file(tmp_path)
    for i, image in enumerate(TRICKY):
        _png(tmp_path / image, i)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    server = start_server(mode="short_then_ok", fail_count=1,
                          responder="fixtures_evaluate.echo_responder:respond")
    config = lambda out, **kw: EvalConfig(out_dir=str(tmp_path / out), bench=str(ann),  # noqa: E731
                                          base_url=server.base_url, progress=False, n_boot=20, **kw)
    try:
        summary = evaluate_model(config("o"), "reasked", api_model="vision-model")
        stats = server.stats()
        # every prompt asked twice, the second time with the very same messages
        assert stats["requests"] == 24 and len(stats["by_hash"]) == 12
        assert set(stats["by_hash"].values()) == {2}
        assert summary["short_replies"] == {"min_chars": 3, "tries": 5, "items_reasked": 12, "reasks": 12,
                                            "kept_short": []}
        def official(image: str, dim: str) -> str:
            return reference_prompt(_as_official(TRICKY[image], dim), dim).strip()

        reference_files(TRICKY, official, tmp_path / "official")
        ours = tmp_path / "o" / "eval" / "responses_reasked"
        for name in ("test_AesP.json", "test_AesE.json", "test_AesA1.json", "test_AesI.json"):
            assert (ours / name).read_bytes() == (tmp_path / "official" / name).read_bytes(), name
        lines = (tmp_path / "o" / "eval" / "predictions_reasked.jsonl").read_text().splitlines()
        preds = [json.loads(x) for x in lines]
        assert [p["reasks"] for p in preds] == [1] * 12

        # a model that only ever says "B": 2 asks each, the last reply kept as given and counted
        server.control(fail_count=1000)
        server.reset()
        caplog.set_level("WARNING")
        stubborn = evaluate_model(config("o2", short_reply_tries=2), "stubborn", api_model="vision-model")
        assert server.requests() == 24
        assert stubborn["short_replies"]["reasks"] == 12 and len(stubborn["short_replies"]["kept_short"]) == 12
        assert "12 replies still shorter than 3 characters after up to 2 asks" in caplog.text
        reference_files(TRICKY, lambda image, dim: "B", tmp_path / "official_b")
        for name in ("test_AesP.json", "test_AesA1.json", "test_AesI.json"):
            assert (tmp_path / "o2" / "eval" / "responses_stubborn" / name).read_bytes() == \
                (tmp_path / "official_b" / name).read_bytes(), name
        # a rerun takes the kept replies from the cache: nothing sent, the same counts
        server.reset()
        again = evaluate_model(config("o2", short_reply_tries=2), "stubborn", api_model="vision-model")
        assert server.requests() == 0 and again["short_replies"]["kept_short"] == stubborn["short_replies"]["kept_short"]
        assert again["short_replies"]["reasks"] == 0
        # one try: each prompt sent once and its short reply written as given
        server.reset()
        once = evaluate_model(config("o3", short_reply_tries=1), "once", api_model="vision-model")
        assert server.requests() == 12 and once["short_replies"]["reasks"] == 0
        assert len(once["short_replies"]["kept_short"]) == 12
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    from aes_lib.models import build_tiny_llava, load_model_and_processor

    return load_model_and_processor(build_tiny_llava(tmp_path_factory.mktemp("tiny") / "m", seed=0))


def test_local_generation_asks_again_for_short_replies(tmp_path, monkeypatch, tiny_llava):
    """answer_local (generate) with a stand-in for the decoding: short replies are generated again
    from the same prompts, sampled, within the limit; the last reply is kept."""
    from aes_lib.evaluate import answer as A

    ann = _annotation_file(tmp_path)
    for i, image in enumerate(TRICKY):
        _png(tmp_path / image, i)
    items = B.load_aesbench(ann)
    model, processor = tiny_llava
    calls = []
    stubborn = "\u201ccalm\u201d"   # the one question whose replies are always short

    def decode(model, processor, prompts, images, max_new_tokens=16, batch_size=8, progress=False,
               temperature=0.0, seed=0):
        calls.append({"prompts": list(prompts), "images": list(images), "temperature": temperature,
                      "seed": seed})
        if temperature == 0:
            return ["B"] * len(prompts)
        return [" B " if stubborn in p else f"C. reply of call {len(calls)}" for p in prompts]

    monkeypatch.setattr(A, "generate_texts", decode)
    preds = {p["id"]: p for p in A.answer_local(items, model, processor, tmp_path, method="generate",
                                                short_reply_tries=3, reask_temperature=0.7, seed=5)}
    # multiple choice: greedy (9 short), 9 asked again, the stubborn one a third time; then AesI
    assert [len(c["prompts"]) for c in calls] == [9, 9, 1, 3, 3]
    assert [c["temperature"] for c in calls] == [0.0, 0.7, 0.7, 0.0, 0.7]
    assert [c["seed"] for c in calls[1:3]] == [6, 7]
    assert calls[1]["prompts"] == calls[0]["prompts"] and calls[1]["images"] == calls[0]["images"]
    assert calls[4]["prompts"] == calls[3]["prompts"]
    assert stubborn in calls[2]["prompts"][0]
    kept = preds["z_first_in_file.jpg:AesE"]
    assert kept["response"] == " B " and kept["reasks"] == 2 and A.is_short_reply(kept["response"])
    others = [p for i, p in preds.items() if i != "z_first_in_file.jpg:AesE"]
    assert all(p["reasks"] == 1 and not A.is_short_reply(p["response"]) for p in others)
    assert preds["a_last_in_file.jpg:AesP"]["response"] == "C. reply of call 2"
    assert preds["a_last_in_file.jpg:AesI"]["response"] == "C. reply of call 5"
    # one try: nothing asked again, the short replies written as given
    calls.clear()
    once = A.answer_local(items, model, processor, tmp_path, method="generate")
    assert len(calls) == 2 and all(p["response"] == "B" and p["reasks"] == 0 for p in once)


def test_sampled_reasks_are_seeded_and_leave_the_global_random_state(tmp_path, tiny_llava):
    import torch

    from aes_lib.evaluate.answer import generate_texts

    model, processor = tiny_llava
    paths = [_png(tmp_path / f"i{i}.png", i) for i in range(3)]
    from aes_lib.models import build_prompt

    prompts = [build_prompt(processor, [{"from": "human", "value": f"<image>\nQuestion {i}?"}]) for i in range(3)]
    state = torch.random.get_rng_state()
    first = generate_texts(model, processor, prompts, paths, 6, 2, temperature=1.0, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert generate_texts(model, processor, prompts, paths, 6, 2, temperature=1.0, seed=3) == first
    samples = {tuple(generate_texts(model, processor, prompts, paths, 6, 2, temperature=1.0, seed=s))
               for s in range(4)}
    assert len(samples) > 1   # sampling, not greedy decoding under another name
