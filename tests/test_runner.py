"""The notebook runner: profiles, failures, partial runs, manifest; and notebook hygiene."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from aes_lib.runner import (RunnerError, find_notebooks, notebooks_with_outputs, reproduce,
                            resolve_parameters, strip_notebook)

from conftest import REPO


def _notebook(path: Path, params: str, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def chain(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "00_first.ipynb", 'out_dir = "outputs"\nseed = 0\nsize = 3',
              "from pathlib import Path\nPath(out_dir).mkdir(exist_ok=True)\n"
              "Path(out_dir, 'first.txt').write_text('x' * size)")
    _notebook(nbs / "01_second.ipynb", 'out_dir = "outputs"\nseed = 0\nrate = 0.5\nname = "b"',
              "from pathlib import Path\nPath(out_dir, name + '.txt').write_text(str(rate * 2))")
    return tmp_path


def _profile(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_runs_chain_and_writes_manifest(chain):
    profile = _profile(chain, "common: {seed: 1}\nnotebooks:\n  '00_first': {size: 5}\n  '01_second': {rate: 2}\n")
    manifest = reproduce(profile, chain / "notebooks", "out", cwd=chain, timeout=120)
    assert (chain / "out" / "first.txt").read_text() == "xxxxx"
    assert (chain / "out" / "b.txt").read_text() == "4"   # int accepted for a float parameter
    saved = json.loads((chain / "out" / "run_manifest.json").read_text())
    assert saved["profile"] == "p" and saved["seeds"] == {"00_first": 1, "01_second": 1}
    assert [n["name"] for n in saved["notebooks"]] == ["00_first", "01_second"]
    assert all(n["ok"] and n["seconds"] > 0 for n in saved["notebooks"])
    assert "first.txt" in saved["outputs"] and "notebooks/00_first.ipynb" in saved["outputs"]
    assert saved["packages"]["papermill"] != "not installed"
    assert saved["parameters"]["00_first"] == {"seed": 1, "size": 5, "out_dir": "out"}
    # the sources are untouched: executed copies live under the output folder
    assert not notebooks_with_outputs(chain / "notebooks")
    assert manifest["outputs"] == saved["outputs"]


def test_unknown_key_is_an_error_naming_it(chain):
    profile = _profile(chain, "common: {seed: 1, learning_rat: 0.1}\n")
    with pytest.raises(RunnerError, match="'learning_rat'"):
        reproduce(profile, chain / "notebooks", "out", cwd=chain)
    profile = _profile(chain, "notebooks:\n  '01_second': {sizes: 3}\n")
    with pytest.raises(RunnerError, match="'sizes' \\(01_second\\)"):
        reproduce(profile, chain / "notebooks", "out", cwd=chain)
    assert not (chain / "out" / "first.txt").exists()   # nothing ran


def test_misspelt_section_is_an_error_naming_it(chain):
    profile = _profile(chain, "notebooks:\n  '01_secnd': {rate: 2}\n")
    with pytest.raises(RunnerError, match="section '01_secnd': no such notebook"):
        reproduce(profile, chain / "notebooks", "out", cwd=chain)


def test_wrong_type_is_an_error_naming_it(chain):
    profile = _profile(chain, "notebooks:\n  '00_first': {size: 'three'}\n")
    with pytest.raises(RunnerError, match="'size'.*str.*int"):
        reproduce(profile, chain / "notebooks", "out", cwd=chain)


def test_failing_cell_stops_the_chain_and_is_shown(chain):
    _notebook(chain / "notebooks" / "00_first.ipynb", 'out_dir = "outputs"',
              "x = 1\nraise ValueError('the cat knocked the cup over')")
    with pytest.raises(RunnerError) as e:
        reproduce(_profile(chain, "{}"), chain / "notebooks", "out", cwd=chain, timeout=120)
    message = str(e.value)
    assert "00_first failed: ValueError: the cat knocked the cup over" in message
    assert "raise ValueError" in message          # the failing cell's source
    assert not (chain / "out" / "b.txt").exists()  # the next notebook did not run
    saved = json.loads((chain / "out" / "run_manifest.json").read_text())
    assert saved["notebooks"][-1]["ok"] is False


def test_timeout_kills_the_notebook(chain):
    _notebook(chain / "notebooks" / "00_first.ipynb", 'out_dir = "outputs"', "import time\ntime.sleep(60)")
    with pytest.raises(RunnerError, match="longer than its 8 s limit"):
        reproduce(_profile(chain, "{}"), chain / "notebooks", "out", cwd=chain, timeout=8)


def test_from_and_only_select_notebooks(chain):
    nbs = chain / "notebooks"
    assert [p.name for p in find_notebooks(nbs, start="01")] == ["01_second.ipynb"]
    assert [p.name for p in find_notebooks(nbs, only=["0"])] == ["00_first.ipynb"]
    with pytest.raises(RunnerError, match="--only 07"):
        find_notebooks(nbs, only=["07"])
    with pytest.raises(RunnerError, match="notebook folder not found"):
        find_notebooks(chain / "missing")
    (chain / "out").mkdir()
    reproduce(_profile(chain, "{}"), nbs, "out", cwd=chain, only=["01"], timeout=120)
    assert (chain / "out" / "b.txt").exists() and not (chain / "out" / "first.txt").exists()


def test_cli_exit_code_and_message(chain):
    proc = subprocess.run([sys.executable, "-m", "aes_lib.cli", "reproduce", "--profile", "nope",
                           "--notebooks", str(chain / "notebooks")], cwd=chain, capture_output=True, text=True)
    assert proc.returncode != 0 and "profile 'nope'" in proc.stderr


def test_strip_removes_outputs(tmp_path):
    path = _notebook(tmp_path / "00_x.ipynb", "a = 1", "print(a)")
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nb.cells[1].execution_count = 3
    nbformat.write(nb, path)
    assert notebooks_with_outputs(tmp_path) == [str(path)]
    assert strip_notebook(path) and not notebooks_with_outputs(tmp_path)


def test_profiles_match_the_notebooks():
    from aes_lib.runner import PROFILES, load_profile

    notebooks = find_notebooks(REPO / "notebooks")
    for name in PROFILES:
        _, data = load_profile(name)
        resolve_parameters(data, notebooks, name)   # raises on any unknown key, section or wrong type
        assert set(data["notebooks"]) == {p.stem for p in notebooks}
