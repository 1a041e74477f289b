"""Batch API at paper scale: batch-export splits into files within the limits, batch-import takes
any number of result files and resumes across them (small limits, CLI round trip)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from aes_lib.cli import main as aes_main
from aes_lib.schema import Instruction, read_jsonl
from fake_openai_server import start_server
from generate_fixtures import make_inputs

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def llm(monkeypatch):
    monkeypatch.setenv("AES_GEN_KEY", "test-key")
    with start_server(responder="fake_generate_responder:respond") as s:
        yield s


def _results_for(path: Path) -> str:
    sys.path.insert(0, str(TESTS))
    from fake_generate_responder import respond

    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return "".join(json.dumps({"custom_id": r["custom_id"], "response": {"status_code": 200, "body": {
        "choices": [{"message": {"content": respond(r["body"])}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5}}}}) + "\n" for r in rows)


def test_split_export_round_trip_then_generate_sends_nothing(llm, tmp_path, capsys):
    make_inputs(tmp_path, n_photos=2, per_image=2)   # 8 critiques
    common = ["--out", str(tmp_path), "--base-url", llm.base_url, "--model", "fake-gpt",
              "--api-key-env", "AES_GEN_KEY"]
    for step in ("refine", "assemble"):
        batch = tmp_path / f"{step}_requests.jsonl"
        assert aes_main(["generate", "batch-export", "--file", str(batch), "--max-requests-per-file", "3",
                         *common]) == 0
        out = capsys.readouterr().out
        parts = sorted(tmp_path.glob(f"{step}_requests.part*.jsonl"))
        assert out.startswith(f"{step}: wrote 8 requests to 3 files") and len(parts) == 3
        assert not batch.exists()
        counts = [len(p.read_text().splitlines()) for p in parts]
        assert counts == [3, 3, 2]
        # the first part's results come back first: import them, export again -> only the rest
        (tmp_path / f"{step}_results0.jsonl").write_text(_results_for(parts[0]))
        assert aes_main(["generate", "batch-import", "--file", str(tmp_path / f"{step}_results0.jsonl"),
                         *common]) == 0
        assert "imported 3" in capsys.readouterr().out
        assert aes_main(["generate", "batch-export", "--file", str(batch), "--max-requests-per-file", "3",
                         *common]) == 0
        assert capsys.readouterr().out.startswith(f"{step}: wrote 5 requests to 2 files")
        rest = sorted(tmp_path.glob(f"{step}_requests.part*.jsonl"))
        assert len(rest) == 2   # the earlier export's third part is gone
        results = []
        for i, p in enumerate(rest, 1):
            results.append(tmp_path / f"{step}_results{i}.jsonl")
            results[-1].write_text(_results_for(p))
        assert aes_main(["generate", "batch-import", "--file", *map(str, results), *common]) == 0
        out = capsys.readouterr().out
        assert "imported 5," in out and "from 2 file(s)" in out
    assert aes_main(["generate", "--backend", "openai", "--no-progress", *common]) == 0
    assert llm.requests() == 0
    ins = read_jsonl(tmp_path / "instructions" / "instructions.jsonl", Instruction)
    assert ins and all(i.generator == "openai:fake-gpt" for i in ins)


def test_size_limit_splits_by_bytes(llm, tmp_path, capsys):
    make_inputs(tmp_path, n_photos=1, per_image=2)   # 4 critiques with images: large lines
    batch = tmp_path / "refine_requests.jsonl"
    common = ["--out", str(tmp_path), "--base-url", llm.base_url, "--model", "fake-gpt",
              "--api-key-env", "AES_GEN_KEY"]
    assert aes_main(["generate", "batch-export", "--file", str(batch), *common]) == 0
    one = batch.stat().st_size
    capsys.readouterr()
    limit_mb = (one / 2 + 1) / 1e6    # room for about half the lines
    assert aes_main(["generate", "batch-export", "--file", str(batch), "--max-file-mb", f"{limit_mb:.9f}",
                     *common]) == 0
    parts = sorted(tmp_path.glob("refine_requests.part*.jsonl"))
    assert len(parts) >= 2 and all(p.stat().st_size <= limit_mb * 1e6 for p in parts)
    assert sum(len(p.read_text().splitlines()) for p in parts) == 4


# --- streaming: the same bytes as an export built in memory, one request alive at a time -----------

def _configs(llm, tmp_path):
    from aes_lib.client import ClientConfig
    from aes_lib.generate import GenerateConfig

    return (GenerateConfig.from_dict({"backend": "openai"}),
            ClientConfig.from_dict({"base_url": llm.base_url, "model": "fake-gpt", "api_key_env": "AES_GEN_KEY"}))


def _in_memory_export(requests, client, max_requests: int, max_bytes: int) -> list[bytes]:
    """The export as it was built before streaming: every uncached line in memory, then cut
    greedily into files within both limits (reference for the bytes)."""
    lines = [(json.dumps({"custom_id": r.key, "method": "POST", "url": "/v1/chat/completions",
                          "body": client.request_body(r)}, ensure_ascii=False) + "\n").encode("utf-8")
             for r in list(requests) if client.cached(r) is None]
    files, chunk = [], []
    for line in lines:
        if chunk and (len(chunk) >= max_requests or sum(map(len, chunk)) + len(line) > max_bytes):
            files.append(b"".join(chunk))
            chunk = []
        chunk.append(line)
    return files + [b"".join(chunk)]


def _written(tmp_path: Path, stem: str) -> list[bytes]:
    parts = sorted(tmp_path.glob(f"{stem}.part*.jsonl"))
    return [p.read_bytes() for p in parts] if parts else [(tmp_path / f"{stem}.jsonl").read_bytes()]


def test_streamed_export_is_byte_identical_to_an_in_memory_export(llm, tmp_path):
    from aes_lib.generate import batch_export, batch_import
    from aes_lib.generate.core import plan_requests

    make_inputs(tmp_path, n_photos=2, per_image=2)   # 8 critiques with images
    cfg, client_cfg = _configs(llm, tmp_path)
    client, refine, _ = plan_requests(cfg, tmp_path, client_cfg)
    one_file = sum(map(len, _in_memory_export(refine, client, 10**9, 10**12)))
    for max_requests, max_bytes in ((50_000, 200_000_000), (3, 200_000_000), (50_000, one_file // 3),
                                    (2, one_file // 5), (8, one_file)):
        batch_export(cfg, tmp_path / "refine.jsonl", tmp_path, client_cfg, max_requests, max_bytes)
        expected = _in_memory_export(refine, client, max_requests, max_bytes)
        assert _written(tmp_path, "refine") == expected, (max_requests, max_bytes)
        assert not list(tmp_path.glob(".refine*.tmp"))   # no temporary file left
    # the assemble step too, after the refinements come back
    (tmp_path / "refine_results.jsonl").write_text(_results_for(tmp_path / "refine.jsonl"))
    assert batch_import(cfg, tmp_path / "refine_results.jsonl", tmp_path, client_cfg)["imported"] == 8
    client, _, assemble = plan_requests(cfg, tmp_path, client_cfg)
    real = [r for r in assemble if not r.key.startswith("estimate:")]
    assert len(real) == 8
    for max_requests in (50_000, 3):
        export = batch_export(cfg, tmp_path / "assemble.jsonl", tmp_path, client_cfg, max_requests)
        assert export["step"] == "assemble"
        assert _written(tmp_path, "assemble") == _in_memory_export(real, client, max_requests, 200_000_000)


def test_export_import_and_estimate_hold_one_request_at_a_time(llm, tmp_path, monkeypatch):
    """Refine requests (which carry the base64 image) are built as they are consumed: at most 3
    alive at once (the one being built, the one before it, and one a consumer's loop variable
    still holds from an earlier pass), not all 12 as when they were built into a list."""
    import gc
    import weakref

    from aes_lib.generate import batch_export, batch_import, estimate
    from aes_lib.generate import llm as gen_llm

    make_inputs(tmp_path, n_photos=3, per_image=2)   # 12 critiques
    cfg, client_cfg = _configs(llm, tmp_path)
    refs: list = []
    peak = {"alive": 0, "built": 0}
    build = gen_llm.refine_request

    def counted(*args, **kw):
        req = build(*args, **kw)
        refs.append(weakref.ref(req))
        peak["built"] += 1
        peak["alive"] = max(peak["alive"], sum(r() is not None for r in refs))
        return req

    monkeypatch.setattr(gen_llm, "refine_request", counted)
    gc.disable()   # count references only, as CPython frees them
    try:
        export = batch_export(cfg, tmp_path / "r.jsonl", tmp_path, client_cfg, max_requests=5)
        assert export["requests"] == 12 and peak["built"] >= 12 and peak["alive"] <= 3
        (tmp_path / "res.jsonl").write_text("".join(_results_for(Path(f["path"])) for f in export["files"]))
        refs.clear()
        peak.update(alive=0, built=0)
        assert batch_import(cfg, tmp_path / "res.jsonl", tmp_path, client_cfg)["imported"] == 12
        assert peak["built"] >= 12 and peak["alive"] <= 3
        refs.clear()
        peak.update(alive=0, built=0)
        assert estimate(cfg, tmp_path, client_cfg)["assemble"]["to_send"] == 12
        assert peak["built"] >= 12 and peak["alive"] <= 3
        refs.clear()
        peak.update(alive=0, built=0)
        assert batch_export(cfg, tmp_path / "a.jsonl", tmp_path, client_cfg)["step"] == "assemble"
        assert peak["built"] >= 12 and peak["alive"] <= 3
    finally:
        gc.enable()


def test_client_export_keeps_no_file_in_memory(tmp_path):
    """The client writes each line as it comes: peak memory is about one request, not one file."""
    import tracemalloc

    from aes_lib.client import ChatRequest, ClientConfig, LLMClient

    client = LLMClient(ClientConfig(model="m"))
    filler = "x" * 100_000

    def requests():
        for i in range(40):
            yield ChatRequest(f"k{i}", [{"role": "user", "content": f"{i} {filler}"}])

    tracemalloc.start()
    try:
        export = client.batch_export(requests(), tmp_path / "b.jsonl", max_requests=25)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [f["requests"] for f in export["files"]] == [25, 15]
    assert sum(f["bytes"] for f in export["files"]) > 4_000_000
    assert peak < 1_000_000, peak   # an in-memory file of 25 lines alone would be 2.5 MB
