"""The whole notebook chain with the smoke profile, exactly as `make reproduce` runs it."""

import json
import os
import re
import subprocess
import sys

import pytest

from aes_lib.runner import find_notebooks

from conftest import REPO


@pytest.mark.slow
def test_smoke_profile_runs_every_notebook(tmp_path):
    out = tmp_path / "outputs"
    # what an earlier run (another profile) left: none of it may be shown or hashed by this run
    stale = {"eval/results.csv": "model,dimension,group_by,group,metric,value,ci_low,ci_high,n\n"
                                 "old-model,AesP,all,all,accuracy,0.9,0.8,1.0,194\n",
             "eval/results_old-model.json": "{}", "figures/fig_old.png": "x",
             "train/run/checkpoint-400/adapter_config.json": "{}", "data/images/old.png": "x"}
    for rel, text in stale.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    (out / "run_manifest.json").write_text("{}")   # the earlier run's: the folder is the project's
    # every figure the run writes passes the reader's check (aes_lib.report.figcheck): readable
    # text at the saved DPI, no text on text, no legend entry without data; a failing figure
    # fails its notebook
    env = {**os.environ, "AES_FIGURE_CHECK": "strict"}
    proc = subprocess.run([sys.executable, "-m", "aes_lib.cli", "reproduce", "--profile", "smoke",
                           "--out", str(out), "--timeout", "600"],
                          cwd=REPO, capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = json.loads((out / "run_manifest.json").read_text())
    expected = [p.stem for p in find_notebooks(REPO / "notebooks")]
    assert [n["name"] for n in manifest["notebooks"]] == expected
    assert all(n["ok"] for n in manifest["notebooks"])
    for stem in expected:
        assert (out / "notebooks" / f"{stem}.ipynb").stat().st_size > 0
        assert f"notebooks/{stem}.ipynb" in manifest["outputs"]
    assert "data/manifest.json" in manifest["outputs"]
    assert "figures/fig_contact_sheet.png" in manifest["outputs"]
    assert manifest["status"] == "ok" and manifest["profile"] == "smoke"
    for rel in stale:
        assert rel not in manifest["outputs"] or rel == "eval/results.csv"
    assert not any((out / rel).exists() for rel in stale if rel != "eval/results.csv")
    assert set(manifest["outputs"]) <= {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    shown = "".join((out / rel).read_text() for rel in ("eval/results.csv", "tables/table_main_results.md",
                                                        "index.html", "report.json"))
    assert "old-model" not in shown and "fig_old" not in shown
    assert_lessons_read_cleanly(out, proc.stderr)


def assert_lessons_read_cleanly(out, console: str) -> None:
    """What a reader of the executed notebooks sees (issue #12): no warnings from papermill or
    the kernel, no list of paths at the end, progress bars in their last state, no U+FFFD, small."""
    import nbformat

    assert "without encryption" not in console
    for log in (out / "logs").glob("*.log"):
        text = log.read_text()
        assert "Passed unknown parameter" not in text and "Unable to parse line" not in text, log.name
    for path in sorted((out / "notebooks").glob("*.ipynb")):
        assert path.stat().st_size < 1_000_000, f"{path.name}: {path.stat().st_size} bytes"
        nb = nbformat.read(path, as_version=4)
        texts = [o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                 for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not any("PosixPath(" in t for t in texts), path.name
        assert not any("\ufffd" in t for t in texts), path.name
        assert not any(o.get("name") == "stderr" for c in nb.cells if c.cell_type == "code"
                       for o in c.outputs), path.name
    nb = nbformat.read(out / "notebooks" / "03_finetune.ipynb", as_version=4)
    stream = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                     if o.output_type == "stream")
    bars = [line for line in re.split(r"[\r\n]", stream) if line.startswith("train:")]
    assert bars and "4/4" in bars[-1], bars[-1:]   # the smoke profile's 4 steps, as the bar ended
