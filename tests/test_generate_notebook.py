"""Notebook 02 runs end to end on tiny inputs with the smoke profile's settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generate_fixtures import make_inputs

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_notebook_02_runs_on_tiny_inputs(tmp_path):
    import papermill

    make_inputs(tmp_path, n_photos=2, per_image=2)
    executed = tmp_path / "notebooks" / "02_generate.ipynb"   # where the runner keeps executed copies:
    executed.parent.mkdir()                                    # a folder the notebook's clearing knows
    papermill.execute_notebook(str(ROOT / "notebooks" / "02_generate.ipynb"), str(executed),
                               parameters={"out_dir": str(tmp_path), "max_critiques": 6, "n_examples": 3},
                               cwd=str(ROOT), progress_bar=False, kernel_name="python3")
    stats = json.loads((tmp_path / "instructions" / "stats.json").read_text())
    assert stats["n_critiques"] == 6 and stats["n_instructions"] > 0
    text = executed.read_text()
    assert "measured by this run" in text and '"output_type": "error"' not in text
