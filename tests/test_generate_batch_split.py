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
