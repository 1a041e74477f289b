"""Hub ids in evaluation: ``llava-hf/...``-style ids resolved from a local Hugging Face cache
folder (no network), on the command line and as notebook 04's default base model (gpu profile)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
REVISION = "0123456789abcdef0123456789abcdef01234567"
HUB_ID = "tiny-org/tiny-llava-hf"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A tiny LLaVA saved in the hub cache layout: models--owner--name/snapshots/<rev>/, refs/main."""
    from aes_lib.models import build_tiny_llava

    root = tmp_path_factory.mktemp("hf")
    repo = root / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    build_tiny_llava(repo / "snapshots" / REVISION, seed=0)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    return root


def _png(path: Path, seed: int) -> None:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)


def _workspace(tmp_path: Path) -> Path:
    from aes_lib.schema import BenchItem, write_jsonl

    for i in range(2):
        _png(tmp_path / "data" / f"im{i}.png", i)
    items = [BenchItem(id=f"q{i}", image=f"im{i}.png", dimension="AesP", question="Is it blurred?",
                       options=["Yes", "No"], answer="A", attribute="technical_quality", qtype="yes-no")
             for i in range(2)]
    write_jsonl(tmp_path / "eval" / "benchmark.jsonl", items)
    return tmp_path


def _run(script: str, hub_cache: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(hub_cache / "home"),
           "HF_HUB_CACHE": str(hub_cache / "hub"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def test_hub_id_from_the_local_cache_on_the_command_line_and_as_notebook_04_default(hub_cache, tmp_path):
    out = _workspace(tmp_path / "o")
    # notebook 03 under the gpu profile trained on a hub id: its config names it, no base_model folder
    run_dir = out / "train" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"model": HUB_ID, "method": "lora"}))
    shutil.copytree(hub_cache / "hub" / ("models--" + HUB_ID.replace("/", "--")) / "snapshots" / REVISION,
                    run_dir / "merged")
    script = f"""
import json, sys
from aes_lib.cli import main
from aes_lib.evaluate import EvalConfig, evaluate_model
from aes_lib.evaluate.tables import default_models

rc = main(["evaluate", "run", "--model", "{HUB_ID}", "--out-dir", "{out}", "--images", "{out / 'data'}"])
assert rc == 0, rc
res = json.load(open("{out}/eval/results_tiny-llava-hf.json"))
print("CLI", res["model_path"], res["model_folder"], res["n_items"])
models = default_models("{out}")
print("DEFAULT", str(models["base"]["model_path"]), str(models["finetuned"]["model_path"]))
cfg = EvalConfig.from_dict(out_dir="{out}", image_root="{out / 'data'}", progress=False, n_boot=20)
s = evaluate_model(cfg, "base", **models["base"])
print("NB04", s["model_path"], s["model_folder"], s["n_items"])
try:
    evaluate_model(cfg, "missing", model_path="tiny-org/not-downloaded")
except FileNotFoundError as e:
    print("MISSING", e)
"""
    proc = _run(script, hub_cache, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in proc.stdout.splitlines()
             if line.split(" ", 1)[0] in ("CLI", "DEFAULT", "NB04", "MISSING")}
    snapshot = str(hub_cache / "hub" / ("models--" + HUB_ID.replace("/", "--")) / "snapshots" / REVISION)
    assert lines["CLI"] == f"{HUB_ID} {snapshot} 2"
    assert lines["DEFAULT"] == f"{HUB_ID} {run_dir / 'merged'}"
    assert lines["NB04"] == f"{HUB_ID} {snapshot} 2"
    assert "not in the local Hugging Face cache" in lines["MISSING"] and "HF_HUB_OFFLINE" in lines["MISSING"]


def test_gpu_profile_trains_on_a_hub_id_and_leaves_04_on_its_default():
    from aes_lib.evaluate.run import is_hub_id

    profile = yaml.safe_load((ROOT / "aes_lib" / "profiles" / "gpu.yaml").read_text())["notebooks"]
    assert is_hub_id(profile["03_finetune"]["model"])
    assert "base_model" not in profile["04_evaluate"]   # 04 follows 03's model (default_models)
    assert not is_hub_id("./local/folder") and not is_hub_id("/abs/path") and not is_hub_id("a/b/c")


def test_default_models_without_notebook_03_names_the_missing_folder(tmp_path):
    from aes_lib.evaluate.tables import default_models

    with pytest.raises(FileNotFoundError, match="base_model.*base model folder not found"):
        default_models(tmp_path)
    (tmp_path / "train" / "run").mkdir(parents=True)
    (tmp_path / "train" / "run" / "config.json").write_text(json.dumps({"model": "tiny"}))
    with pytest.raises(FileNotFoundError, match="train/base_model"):
        default_models(tmp_path)   # the tiny model: 03 builds train/base_model
