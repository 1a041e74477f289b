"""bench/train_throughput.py: the tiny run works on the CPU; the 7B FLOP count is right."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_throughput"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_llava7b_shape_and_flop_count(bench):
    import torch

    shape = bench.SHAPES["llava-7b"]
    model = bench.build_model(shape, torch.device("meta"), torch.bfloat16)
    lm = model.model.language_model
    n_lm = sum(p.numel() for p in lm.parameters())
    # Llama-2-7B has 6.74 B parameters with a 32,000 vocabulary; this one has 32,064 (+64 x 4096)
    assert abs(n_lm + model.lm_head.weight.numel() - (6_738_415_616 + 2 * 64 * 4096)) < 1e6
    n_vis = sum(p.numel() for p in model.model.vision_tower.parameters())
    assert 300e6 < n_vis < 310e6  # CLIP ViT-L/14-336 vision tower: about 303 M
    non_emb = n_lm - lm.embed_tokens.weight.numel() + model.lm_head.weight.numel()
    expected = 833 * 3 * (2 * non_emb + 4 * 32 * 4096 * 833) + 2 * n_vis * 577 + 4 * 24 * 1024 * 577 ** 2
    assert bench.model_flops_per_sample(model, shape) == pytest.approx(expected)
    # about 41 GFLOP per token: 6 x 6.6 B parameters plus attention
    assert 40e9 < bench.model_flops_per_sample(model, shape) / 833 < 43e9


@pytest.mark.slow
def test_tiny_run_prints_figures(bench, capsys, tmp_path):
    rc = bench.main(["--tiny", "--steps", "1", "--warmup", "0", "--variant", "checkpointing=full",
                     "--json-out", str(tmp_path / "b.json")])
    report = json.loads((tmp_path / "b.json").read_text())
    out = capsys.readouterr().out
    assert rc == 0 and "tokens_per_s" in out
    assert report["shape"] == "tiny" and report["matmul_peak_tflops"] > 0
    names = [r["config"] for r in report["results"]]
    assert names[0].startswith("plain") and len(names) == 3
    for row in report["results"]:
        assert row["tokens_per_s"] > 0 and 0 < row["utilisation"]
