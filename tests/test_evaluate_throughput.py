"""bench/eval_throughput.py in its tiny shape: both methods run on one model and print q/s.

Run as the GPU machine runs it: a script with only ``PYTHONPATH=.``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_bench_prints_questions_per_second_for_both_methods(tmp_path):
    env = {**os.environ, "PYTHONPATH": "."}
    res = subprocess.run([sys.executable, "bench/eval_throughput.py", "--shape", "tiny", "--images", "6",
                          "--batch-images", "4", "--generate-questions", "3", "--max-new-tokens", "3",
                          "--json-out", str(tmp_path / "s.json")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "generate (batch 1, 3 new tokens):" in out and "likelihood, shared image prefix" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["shape"] == "tiny"
    for key in ("generate", "likelihood_batched", "likelihood_shared_prefix"):
        assert summary[key]["questions_per_second"] > 0
        assert f"{summary[key]['questions_per_second']:.2f} questions/s" in out
    assert summary["generate"]["questions"] == 3 and summary["likelihood_shared_prefix"]["questions"] == 18
    # sharing the image prefix changes nothing but the speed
    assert summary["max_abs_logprob_diff_shared_vs_batched"] < 1e-4
    assert summary["argmax_agreement_shared_vs_batched"] == 1.0
