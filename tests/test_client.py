"""aes_lib.client against a real OpenAI-compatible server process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import sqlite3
from pathlib import Path

import pytest

from aes_lib.client import (ChatRequest, ClientConfig, LLMClient, TokenBucket, backoff_delay,
                            image_data_url, messages_hash)
from aes_lib.config import ConfigError
from fake_openai_server import start_server

SECRET = "sk-test-SECRET-do-not-leak-123"


@pytest.fixture(scope="module")
def server():
    with start_server() as s:
        yield s


@pytest.fixture
def fake(server, monkeypatch):
    server.control(mode="ok", fail_count=1, latency_ms=0, hang_s=30, responder="")
    server.reset()
    monkeypatch.setenv("AES_TEST_KEY", SECRET)
    return server


def make_client(server, **kw) -> LLMClient:
    cfg = dict(base_url=server.base_url, model="fake-model", api_key_env="AES_TEST_KEY",
               max_retries=2, max_reasks=1, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=5.0)
    cfg.update(kw)
    return LLMClient(ClientConfig.from_dict(cfg))


def needs_reply(text: str) -> dict:
    data = json.loads(text)
    if "reply" not in data:
        raise ValueError("field 'reply' is missing")
    return data


def req(key: str = "a", text: str = "hello") -> ChatRequest:
    return ChatRequest(key, [{"role": "user", "content": text}], needs_reply, "test_v1")


def test_success_parses_and_counts_tokens(fake):
    client = make_client(fake, input_price_per_mtok=0.15, output_price_per_mtok=0.60)
    [r] = client.run([req()], progress=False)
    assert r.ok and r.parsed["reply"] == "ok" and not r.cached and r.error == ""
    assert r.usage["prompt_tokens"] > 0 and r.usage["completion_tokens"] > 0
    assert fake.requests() == 1
    u = client.usage_summary()
    assert u["requests_sent"] == 1 and u["succeeded"] == 1
    assert u["cost_usd"] == pytest.approx(
        (u["prompt_tokens"] * 0.15 + u["completion_tokens"] * 0.60) / 1e6, abs=1e-6)
    body = fake.stats()["last_body"]
    assert body["model"] == "fake-model" and body["response_format"] == {"type": "json_object"}


def test_429_then_success_is_retried(fake):
    fake.control(mode="429_then_ok", fail_count=1)
    client = make_client(fake)
    [r] = client.run([req()], progress=False)
    assert r.ok and r.attempts == 2
    assert fake.requests() == 2 and client.usage_summary()["retries"] == 1


def test_500_gives_up_after_max_retries(fake):
    fake.control(mode="500")
    client = make_client(fake, max_retries=2)
    [r] = client.run([req()], progress=False)
    assert not r.ok and "500" in r.error and r.attempts == 3
    assert fake.requests() == 3 and client.usage_summary()["failed"] == 1


def test_timeout_is_retried_then_reported(fake):
    fake.control(mode="timeout", hang_s=5)
    client = make_client(fake, timeout_s=0.3, max_retries=1)
    [r] = client.run([req()], progress=False)
    assert not r.ok and "Timeout" in r.error
    assert fake.requests() == 2


def test_timeout_then_success(fake):
    fake.control(mode="timeout_then_ok", fail_count=1, hang_s=5)
    [r] = make_client(fake, timeout_s=0.3, max_retries=2).run([req()], progress=False)
    assert r.ok and fake.requests() == 2


def test_non_json_reply_is_reasked_then_rejected_with_reason(fake):
    fake.control(mode="non_json")
    client = make_client(fake, max_reasks=2)
    [r] = client.run([req()], progress=False)
    assert not r.ok and r.error.startswith("invalid reply after 3 tries") and "JSONDecodeError" in r.error
    assert fake.requests() == 3 and client.usage_summary()["reasks"] == 2
    # the re-ask carries the bad reply and the reason
    last = fake.stats()["last_body"]["messages"]
    assert last[-2]["role"] == "assistant" and "not valid" in last[-1]["content"]


def test_reply_missing_fields_is_rejected(fake):
    fake.control(mode="missing_fields")
    [r] = make_client(fake, max_reasks=1).run([req()], progress=False)
    assert not r.ok and "reply" in r.error and "missing" in r.error
    assert fake.requests() == 2


def test_body_that_is_not_json_is_retried_then_reported(fake):
    fake.control(mode="bad_body")
    [r] = make_client(fake, max_retries=1).run([req()], progress=False)
    assert not r.ok and r.error
    assert fake.requests() == 2


def test_cache_sends_nothing_twice_and_never_stores_the_key(fake, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "cache.sqlite"
    reqs = [req(f"k{i}", f"text {i}") for i in range(5)]
    first = make_client(fake, cache_path=str(cache)).run(reqs, progress=False)
    assert all(r.ok and not r.cached for r in first) and fake.requests() == 5
    client = make_client(fake, cache_path=str(cache))
    second = client.run(reqs + [req("new", "new text")], progress=False)
    assert [r.cached for r in second] == [True] * 5 + [False]
    assert [r.text for r in second[:5]] == [r.text for r in first]
    assert fake.requests() == 6 and client.usage_summary()["cache_hits"] == 5
    # another model or prompt version is another cache entry
    other = make_client(fake, cache_path=str(cache), model="other-model").run(reqs[:1], progress=False)
    assert not other[0].cached and fake.requests() == 7
    client.close()
    for path in tmp_path.rglob("*"):
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(client.usage_summary()) + json.dumps(client.cfg.to_dict())
    with sqlite3.connect(cache) as db:
        hashes = {h for (h,) in db.execute("SELECT messages_sha256 FROM replies")}
    assert messages_hash(reqs[0].messages) in hashes


def test_works_inside_a_running_event_loop(fake):
    client = make_client(fake)

    async def notebook_cell():  # Jupyter runs cells inside a live loop
        return client.run([req("a"), req("b", "other")], progress=False)

    results = asyncio.run(notebook_cell())
    assert [r.ok for r in results] == [True, True] and fake.requests() == 2


def test_concurrency_keeps_order_and_counts(fake):
    fake.control(latency_ms=20)
    reqs = [req(f"k{i}", f"message number {i}") for i in range(40)]
    results = make_client(fake, concurrency=8).run(reqs, progress=False)
    assert [r.key for r in results] == [r.key for r in reqs]
    assert all(r.ok for r in results) and fake.requests() == 40


def test_duplicate_keys_and_missing_key_are_errors(fake, monkeypatch):
    with pytest.raises(ValueError, match="'a'"):
        make_client(fake).run([req("a"), req("a", "x")], progress=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = LLMClient(ClientConfig(model="m"))  # construction must not need a key
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        client.run([req()], progress=False)
    with pytest.raises(ConfigError, match="api_key_env"):
        ClientConfig.from_dict({"api_key_env": "sk-abc"})


def test_batch_export_and_import_fill_the_cache(fake, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    reqs = [req(f"k{i}", f"text {i}") for i in range(3)]
    client = make_client(fake, cache_path=cache)
    export = client.batch_export(reqs, tmp_path / "batch.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "batch.jsonl").read_text().splitlines()]
    assert export["requests"] == 3 and len(export["files"]) == 1 and [x["custom_id"] for x in lines] == ["k0", "k1", "k2"]
    assert lines[0]["url"] == "/v1/chat/completions" and lines[0]["body"]["messages"] == reqs[0].messages
    results = [{"custom_id": "k0", "response": {"status_code": 200, "body": {
                   "choices": [{"message": {"content": '{"reply": "from batch"}'}}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 4}}}},
               {"custom_id": "k1", "response": {"status_code": 200, "body": {
                   "choices": [{"message": {"content": "not json"}}]}}},
               {"custom_id": "k2", "error": {"message": "expired"}}]
    (tmp_path / "out.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    counts = client.batch_import(reqs, tmp_path / "out.jsonl")
    assert (counts["imported"], counts["invalid"], counts["failed"]) == (1, 1, 1)
    assert "k1" in counts["errors"] and "k2" in counts["errors"]
    out = client.run(reqs, progress=False)
    assert out[0].cached and out[0].parsed == {"reply": "from batch"}
    assert fake.requests() == 2  # only the two that the batch did not answer
    assert client.batch_export(reqs, tmp_path / "again.jsonl")["requests"] == 0


def _batch_results(path: Path, ok: bool = True) -> list[dict]:
    """Batch API output lines answering the requests of one input file (reply = its text)."""
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return [{"custom_id": r["custom_id"], "response": {"status_code": 200, "body": {
                "choices": [{"message": {"content": json.dumps({"reply": r["body"]["messages"][0]["content"]})}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4}}}} if ok else
            {"custom_id": r["custom_id"], "error": {"message": "expired"}} for r in rows]


def test_batch_export_splits_within_limits_and_import_resumes_across_files(fake, tmp_path):
    from aes_lib.client import batch_part_files

    reqs = [req(f"k{i:02d}", f"text {i} " + "x" * (400 if i % 7 == 3 else 0)) for i in range(23)]
    client = make_client(fake, cache_path=str(tmp_path / "c.sqlite"))
    (tmp_path / "batch.part009.jsonl").write_text("stale part of an earlier export\n")
    export = client.batch_export(reqs, tmp_path / "batch.jsonl", max_requests=5, max_bytes=1400)
    files = [Path(f["path"]) for f in export["files"]]
    sizes = [f["requests"] for f in export["files"]]
    assert 5 in sizes and min(sizes[:-1]) < 5   # both limits bind somewhere
    assert files == batch_part_files(tmp_path / "batch.jsonl") and len(files) >= 5
    assert not (tmp_path / "batch.jsonl").exists() and not (tmp_path / "batch.part009.jsonl").exists()
    keys = []
    for f, info in zip(files, export["files"]):
        data = f.read_bytes()
        lines = data.decode().splitlines()
        assert len(lines) == info["requests"] <= 5 and len(data) == info["bytes"] <= 1400
        keys += [json.loads(x)["custom_id"] for x in lines]
    assert keys == [r.key for r in reqs] and export["requests"] == 23   # each once, in order
    # the results of the first two files come back: imported in one call
    for i, f in enumerate(files):
        (tmp_path / f"out{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _batch_results(f)))
    counts = client.batch_import(reqs, [tmp_path / "out0.jsonl", tmp_path / "out1.jsonl"])
    done = export["files"][0]["requests"] + export["files"][1]["requests"]
    assert counts["imported"] == done and counts["files"] == 2 and not counts["errors"]
    # resume: a new export holds only what is still missing
    again = client.batch_export(reqs, tmp_path / "batch.jsonl", max_requests=5, max_bytes=1400)
    assert again["requests"] == 23 - done
    # the rest arrive later, in any order, one failing file re-sent and answered afterwards
    later = [tmp_path / f"out{i}.jsonl" for i in range(2, len(files))][::-1]
    (tmp_path / "failed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _batch_results(files[2], ok=False)))
    counts = client.batch_import(reqs, [tmp_path / "failed.jsonl", *later])
    assert counts["failed"] == export["files"][2]["requests"] and counts["imported"] == 23 - done
    assert not counts["errors"]   # failed in one file, answered in another: no error left
    assert client.batch_export(reqs, tmp_path / "batch.jsonl", max_requests=5)["requests"] == 0
    out = client.run(reqs, progress=False)
    assert fake.requests() == 0 and all(r.cached for r in out)
    assert out[22].parsed == {"reply": reqs[22].messages[0]["content"]}


def test_batch_export_one_file_when_within_limits_and_refuses_an_oversized_request(fake, tmp_path):
    reqs = [req(f"k{i}", f"text {i}") for i in range(4)]
    client = make_client(fake)
    export = client.batch_export(reqs, tmp_path / "b.jsonl", max_requests=4)
    assert [f["path"] for f in export["files"]] == [str(tmp_path / "b.jsonl")]
    with pytest.raises(ValueError, match="'k0' alone is .* bytes"):
        client.batch_export(reqs, tmp_path / "b.jsonl", max_bytes=50)


def test_estimate_sends_nothing(fake):
    client = make_client(fake, max_tokens=100, input_price_per_mtok=1.0, output_price_per_mtok=2.0)
    est = client.estimate([req("a", "x" * 400), req("b", "y" * 400)], expected_completion_tokens=50)
    assert est["to_send"] == 2 and est["est_prompt_tokens"] >= 200
    assert est["est_cost_usd"] == pytest.approx((est["est_prompt_tokens"] + 2 * 100) / 1e6, abs=1e-4)
    assert fake.requests() == 0


def test_token_bucket_arithmetic():
    now = [0.0]
    bucket = TokenBucket(60, clock=lambda: now[0])  # 1 per second, burst 60
    assert bucket.wait_time(60) == 0.0
    assert bucket.wait_time(1) == pytest.approx(1.0)
    now[0] = 2.0
    assert bucket.wait_time(1) == 0.0 and bucket.tokens == pytest.approx(1.0)
    assert bucket.wait_time(5) == pytest.approx(4.0)


def test_backoff_grows_and_is_capped():
    rng = random.Random(0)
    delays = [backoff_delay(a, 1.0, 8.0, rng) for a in range(6)]
    for a, d in enumerate(delays):
        assert 0.5 * min(8.0, 2 ** a) <= d <= 1.5 * min(8.0, 2 ** a)


def test_image_data_url(tmp_path):
    from PIL import Image

    p = tmp_path / "x.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(p)
    url = image_data_url(p)
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == p.read_bytes()
    with pytest.raises(FileNotFoundError, match="missing.png"):
        image_data_url(tmp_path / "missing.png")


@pytest.mark.parametrize("mode, words", [("401", "API key was refused"), ("404", "does not exist"),
                                         ("400_model", "model is unknown.*Invalid model name"),
                                         ("400_nodb", "cannot check keys.*No connected db")])
def test_refused_key_or_model_stops_the_run_at_once(fake, mode, words):
    from aes_lib.client import FatalAPIError

    fake.control(mode=mode)
    client = make_client(fake, concurrency=1, max_retries=3)
    requests = [ChatRequest(f"k{i}", [{"role": "user", "content": f"question {i}"}]) for i in range(20)]
    with pytest.raises(FatalAPIError, match=words) as e:
        client.run(requests, progress=False)
    assert "HTTP " + mode[:3] in str(e.value) and SECRET not in str(e.value)
    assert fake.requests() == 1   # not 20 requests, each refused in turn, and no retries


def test_fatal_reason_reads_the_status_and_the_message():
    from aes_lib.client import fatal_reason

    class Refused(Exception):
        def __init__(self, status, message):
            super().__init__(message)
            self.status_code, self.body = status, None

    assert fatal_reason(Refused(401, "x")) == "the API key was refused"
    assert "unknown" in fatal_reason(Refused(400, "The model `gpt-x` does not exist or you do not have access"))
    assert "no connected db" in fatal_reason(Refused(400, "No connected db."))
    for status, message in ((400, "The image file does not exist"), (400, "max_tokens is too large"),
                            (500, "No connected db."), (429, "Invalid model name")):
        assert fatal_reason(Refused(status, message)) is None, (status, message)


def test_an_ordinary_400_fails_its_own_request_only(fake):
    fake.control(mode="400_bad_request")
    client = make_client(fake, concurrency=2, max_retries=3)
    requests = [ChatRequest(f"k{i}", [{"role": "user", "content": f"question {i}"}]) for i in range(5)]
    results = client.run(requests, progress=False)
    assert [r.ok for r in results] == [False] * 5 and "Invalid image data" in results[0].error
    assert fake.requests() == 5   # each sent once: not retried, not stopping the others


# --- re-asking with the same messages (AesBench's short replies) ---------------------------------

def long_enough(text: str) -> str:
    if len(text.strip()) < 3:
        raise ValueError(f"reply {text!r} is too short")
    return text


def repeat_req(key: str = "q", text: str = "Which option?") -> ChatRequest:
    return ChatRequest(key, [{"role": "user", "content": text}], long_enough, "short_v1", reask="repeat",
                       reask_temperature=0.9, keep_last=True)


def test_repeat_reask_sends_the_same_messages_until_the_reply_is_long_enough(fake):
    fake.control(mode="short_then_ok", fail_count=2)
    client = make_client(fake, max_reasks=4, temperature=0.0)
    [r] = client.run([repeat_req()], progress=False)
    assert r.ok and not r.invalid and r.text.startswith('{"reply"') and r.reasks == 2
    stats = fake.stats()
    # three asks of one and the same conversation: no reply or correction appended
    assert stats["requests"] == 3 and list(stats["by_hash"].values()) == [3]
    assert stats["last_body"]["messages"] == repeat_req().messages
    assert stats["last_body"]["temperature"] == 0.9   # re-asks sample; the first ask used 0.0
    assert client.usage_summary()["reasks"] == 2 and client.usage_summary()["kept_invalid"] == 0


def test_repeat_reask_keeps_the_last_reply_at_the_limit_and_caches_it(fake, tmp_path):
    fake.control(mode="short_then_ok", fail_count=100)
    cache = str(tmp_path / "c.sqlite")
    client = make_client(fake, max_reasks=2, cache_path=cache)
    [r] = client.run([repeat_req()], progress=False)
    assert r.ok and r.text == "B" and r.parsed is None and r.reasks == 2 and "too short" in r.invalid
    assert fake.requests() == 3 and client.usage_summary()["kept_invalid"] == 1
    # a rerun takes the kept reply from the cache: nothing sent, still flagged
    [again] = make_client(fake, max_reasks=2, cache_path=cache).run([repeat_req()], progress=False)
    assert again.cached and again.text == "B" and "too short" in again.invalid and fake.requests() == 3
    # a higher limit asks again (4 asks), and the server's longer reply is taken once it comes
    fake.control(fail_count=5)
    [more] = make_client(fake, max_reasks=3, cache_path=cache).run([repeat_req()], progress=False)
    assert more.ok and not more.invalid and more.text.startswith('{"reply"') and fake.requests() == 6
    # without keep_last the same short replies fail the request, as for JSON replies
    fake.control(fail_count=100)
    plain = ChatRequest("p", [{"role": "user", "content": "other"}], long_enough, reask="repeat")
    [failed] = make_client(fake, max_reasks=1).run([plain], progress=False)
    assert not failed.ok and failed.error.startswith("invalid reply after 2 tries")
    with pytest.raises(ValueError, match="reask must be one of"):
        ChatRequest("x", [], reask="again")


def test_interrupted_batch_export_leaves_no_temporary_or_unnamed_file(fake, tmp_path):
    def failing_after(n: int):
        for i in range(n):
            yield req(f"k{i}", f"text {i}")
        raise RuntimeError("critique file broke off")

    client = make_client(fake)
    # within the first file: nothing is left at all
    with pytest.raises(RuntimeError, match="broke off"):
        client.batch_export(failing_after(2), tmp_path / "b.jsonl", max_requests=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # after the split: the parts already full stay (named), the one being written goes
    with pytest.raises(RuntimeError, match="broke off"):
        client.batch_export(failing_after(7), tmp_path / "b.jsonl", max_requests=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.part001.jsonl", "b.part002.jsonl"]
    # the next export removes them first
    export = client.batch_export([req(f"k{i}", f"text {i}") for i in range(4)], tmp_path / "b.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.jsonl"] and export["requests"] == 4


def test_prices_are_the_models_own_or_unknown(fake):
    """gpt-4o is priced as gpt-4o, not as gpt-4o-mini; a model without a known price gets no cost."""
    from aes_lib.client import KNOWN_PRICES

    mini = ClientConfig.from_dict(model="gpt-4o-mini")
    big = ClientConfig.from_dict(model="gpt-4o")
    assert mini.prices() == KNOWN_PRICES["gpt-4o-mini"] and big.prices() == KNOWN_PRICES["gpt-4o"]
    assert big.prices() != mini.prices()
    assert ClientConfig.from_dict(model="gpt-4o-2024-08-06").prices() == KNOWN_PRICES["gpt-4o"]
    assert ClientConfig.from_dict(model="Qwen/Qwen2.5-VL-7B-Instruct").prices() is None
    assert ClientConfig.from_dict(model="x", input_price_per_mtok=1.0, output_price_per_mtok=2.0).prices() == (1.0, 2.0)
    with pytest.raises(ValueError, match="both prices"):
        ClientConfig.from_dict(model="x", input_price_per_mtok=1.0)
    reqs = [req("a", "hello " * 50)]
    est = {m: make_client(fake, model=m).estimate(reqs, 100) for m in ("gpt-4o-mini", "gpt-4o", "local-llava")}
    assert est["gpt-4o"]["est_cost_usd"] > 10 * est["gpt-4o-mini"]["est_cost_usd"] > 0
    assert est["local-llava"]["est_cost_usd"] is None and est["local-llava"]["est_batch_cost_usd"] is None
    assert est["local-llava"]["price"].startswith("price unknown for model 'local-llava'")
    client = make_client(fake, model="local-llava")
    [r] = client.run([req()], progress=False)
    u = client.usage_summary()
    assert r.ok and u["prompt_tokens"] > 0 and u["cost_usd"] is None and "price unknown" in u["price"]
