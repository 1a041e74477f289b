"""The whole notebook chain with the smoke profile, exactly as `make reproduce` runs it."""

import json
import subprocess
import sys

import pytest

from aes_lib.runner import find_notebooks

from conftest import REPO


@pytest.mark.slow
def test_smoke_profile_runs_every_notebook(tmp_path):
    out = tmp_path / "outputs"
    proc = subprocess.run([sys.executable, "-m", "aes_lib.cli", "reproduce", "--profile", "smoke",
                           "--out", str(out), "--timeout", "600"],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
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
