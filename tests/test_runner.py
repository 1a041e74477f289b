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
    assert saved["produced_by"]["first.txt"] == "00_first" and saved["produced_by"]["b.txt"] == "01_second"
    assert saved["status"] == "ok" and saved["notebooks_dir"] == "notebooks"
    assert saved["git_dirty"] in (True, False, None)
    assert {n["run_id"] for n in saved["notebooks"]} == {saved["run_id"]}
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
    assert saved["status"] == "failed"
    first, second = saved["notebooks"]
    assert first["status"] == "failed" and first["error"]["ename"] == "ValueError"
    assert first["error"]["evalue"] == "the cat knocked the cup over"
    assert "raise ValueError" in first["error"]["source"] and first["error"]["cell_index"] == 2  # in the executed copy, after the injected parameters
    assert second == {"name": "01_second", "status": "not run", "ok": False,
                      "reason": "an earlier notebook failed"}


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
    manifest = reproduce(_profile(chain, "{}"), nbs, "out", cwd=chain, only=["01"], timeout=120)
    assert (chain / "out" / "b.txt").exists() and not (chain / "out" / "first.txt").exists()
    assert manifest["status"] == "incomplete"
    assert manifest["notebooks"][0]["status"] == "not run"


def test_rerun_keeps_records_of_notebooks_it_did_not_run(chain):
    nbs = chain / "notebooks"
    full = reproduce(_profile(chain, "common: {seed: 1}"), nbs, "out", cwd=chain, timeout=120)
    _notebook(nbs / "01_second.ipynb", 'out_dir = "outputs"\nseed = 0\nrate = 0.5\nname = "c"',
              "from pathlib import Path\nPath(out_dir, name + '.txt').write_text(str(rate * 2))")
    again = reproduce(_profile(chain, "{}"), nbs, "out", cwd=chain, only=["01"], timeout=120)
    first, second = again["notebooks"]
    assert first["status"] == "ok" and first["run_id"] == full["run_id"] and first["kept_from_earlier_run"]
    assert second["status"] == "ok" and second["run_id"] == again["run_id"] != full["run_id"]
    assert again["status"] == "ok" and again["parameters"]["00_first"]["seed"] == 1
    # 01's old file was cleared (its previous manifest attributed it to 01); 00's is kept, with its hash
    assert not (chain / "out" / "b.txt").exists() and (chain / "out" / "c.txt").exists()
    assert set(again["outputs"]) >= {"first.txt", "c.txt", "notebooks/00_first.ipynb"}
    assert "b.txt" not in again["outputs"] and again["produced_by"]["first.txt"] == "00_first"


def test_a_full_run_shows_and_hashes_nothing_of_an_earlier_one(chain):
    nbs = chain / "notebooks"
    out = chain / "out"
    reproduce(_profile(chain, "{}"), nbs, "out", cwd=chain, timeout=120)
    # files an earlier run left in stage folders the chain owns, and a file nobody wrote
    for rel in ("eval/results_old-model.json", "figures/fig_bars_attribute.png", "train/run/checkpoint-400/x",
                "critiques/critiques.db", "eval/api_cache.db"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("from an earlier run")
    (out / "stray.txt").write_text("not written by any notebook")
    manifest = reproduce(_profile(chain, "notebooks:\n  '01_second': {name: z}"), nbs, "out", cwd=chain,
                         timeout=120)
    assert not (out / "b.txt").exists() and (out / "z.txt").exists()   # the first run's output is gone
    for rel in ("eval/results_old-model.json", "figures", "train"):
        assert not (out / rel).exists()
    # stores of human work and caches of paid requests stay, but are not this run's outputs
    assert (out / "critiques/critiques.db").exists() and (out / "eval/api_cache.db").exists()
    assert set(manifest["outputs"]) == {"first.txt", "z.txt", "notebooks/00_first.ipynb",
                                        "notebooks/01_second.ipynb"}
    assert manifest["other_files"] == ["critiques/critiques.db", "eval/api_cache.db", "stray.txt"]


def test_clear_outputs_follows_ownership(tmp_path):
    from aes_lib.runner import OUTPUT_MARK, clear_outputs, owner_of

    assert owner_of("figures/fig_contact_sheet.png") == "00" and owner_of("figures/fig_radar.png") == "05"
    assert owner_of("eval/results.csv") == "04" and owner_of("stray.txt") is None
    for rel in ("eval/results.csv", "eval/api_cache.db", "figures/fig_contact_sheet.png",
                "figures/fig_bars_qtype.png", "tables/table_t.md", "index.html", "notebooks/05_figures.ipynb"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert clear_outputs(tmp_path, "05_figures") == 3   # a notebook clearing itself keeps its executed copy
    assert clear_outputs(tmp_path, "05_figures", runner_files=True) == 1
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                  if p.is_file() and p.name != OUTPUT_MARK) == [
        "eval/api_cache.db", "eval/results.csv", "figures/fig_contact_sheet.png"]
    assert clear_outputs(tmp_path, "04") == 1 and (tmp_path / "eval/api_cache.db").exists()
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("not ours")
    assert clear_outputs(tmp_path, "04", {f"../{outside.name}": "04_evaluate"}) == 0 and outside.exists()


def _write(root: Path, rels) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")


def _listing(root: Path) -> list[str]:
    from aes_lib.runner import OUTPUT_MARK

    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != OUTPUT_MARK)


def test_a_notebook_rerun_in_jupyterlab_leaves_no_old_checkpoint_and_keeps_the_stores(tmp_path):
    """What notebook 03 does at its start (issue #12): old checkpoint-N folders go; the annotation
    store (with the WAL file of a store still open in the kernel) and the API caches stay."""
    from aes_lib.runner import clear_outputs

    _write(tmp_path, ["data/manifest.json", "critiques/critiques.db", "critiques/critiques.db-wal",
                      "critiques/critiques.jsonl", "instructions/llava_train.json",
                      "instructions/llm_cache.sqlite", "train/run/checkpoint-400/adapter_model.safetensors",
                      "train/run/checkpoint-4/adapter_model.safetensors", "train/run/loss.csv",
                      "train/base_model/config.json", "eval/api_cache.db"])
    assert clear_outputs(tmp_path, "03_finetune") == 4
    assert not (tmp_path / "train").exists()
    assert clear_outputs(tmp_path, "01_collect") == 1 and clear_outputs(tmp_path, "02_generate") == 1
    assert _listing(tmp_path) == ["critiques/critiques.db", "critiques/critiques.db-wal", "data/manifest.json",
                                  "eval/api_cache.db", "instructions/llm_cache.sqlite"]


def test_every_notebook_clears_its_own_outputs_at_its_start():
    """Run one by one in JupyterLab, each notebook shows only its own outputs: it clears them
    right after its parameters, before it writes anything."""
    for path in find_notebooks(REPO / "notebooks"):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        at = next(i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", []))
        assert f'clear_outputs(out_dir, "{path.stem}")' in code[at + 1].source, path.name


def test_clearing_refuses_a_folder_the_project_did_not_write(tmp_path):
    from aes_lib.runner import ForeignFolderError, claim_output_folder, clear_outputs

    _write(tmp_path, ["data/my_photos/holiday.jpg", "thesis.tex"])
    with pytest.raises(ForeignFolderError, match=f"{tmp_path}: not empty and not written by this project"):
        clear_outputs(tmp_path, "00_dataset")
    assert _listing(tmp_path) == ["data/my_photos/holiday.jpg", "thesis.tex"]
    # forced: files at the project's paths are moved aside (they were not the project's), a
    # user's photo under data/ stays where it is; nothing is deleted
    _write(tmp_path, ["data/manifest.json", "data/images/x__original.png"])
    assert clear_outputs(tmp_path, "00_dataset", force=True) == 0
    aside = [p.name for p in tmp_path.iterdir() if p.name.startswith("aes-moved-aside-")]
    assert len(aside) == 1
    assert _listing(tmp_path) == sorted([f"{aside[0]}/data/images/x__original.png", f"{aside[0]}/data/manifest.json",
                                         "data/my_photos/holiday.jpg", "thesis.tex"])
    import shutil
    shutil.rmtree(tmp_path / aside[0])
    # a fresh folder, the repository's outputs/ with its README, a folder an earlier run wrote
    assert clear_outputs(tmp_path / "new", "00_dataset") == 0 and (tmp_path / "new").is_dir()
    _write(tmp_path / "repo_outputs", ["README.md"])
    _write(tmp_path / "earlier_run", ["run_manifest.json", "notes.txt"])
    for folder in ("repo_outputs", "earlier_run", "new"):
        claim_output_folder(tmp_path / folder)
    # notebooks run one by one (no manifest) leave only names the project writes: a notebook may clear
    _write(tmp_path / "lab", ["data/manifest.json", "critiques/critiques.jsonl", "figures/fig_collect_stats.png"])
    assert clear_outputs(tmp_path / "lab", "01_collect") == 2
    _write(tmp_path / "lab2", ["data/manifest.json"])
    with pytest.raises(ForeignFolderError):   # the runner is stricter: a manifest, the mark or nothing
        claim_output_folder(tmp_path / "lab2")


def test_user_files_in_the_project_folders_belong_to_no_notebook(tmp_path):
    from aes_lib.runner import OWNED_OUTPUTS, clear_outputs, owner_of

    stage_files = {"data/images/rocket__blur.png": "00", "data/manifest.json": "00",
                   "figures/fig_contact_sheet.pdf": "00", "critiques/consensus.csv": "01",
                   "critiques/import_summary.json": "01", "figures/fig_collect_stats.png": "01",
                   "instructions/llava_train.json": "02", "instructions/messages_val.jsonl": "02",
                   "train/base_model/config.json": "03", "train/run/checkpoint-4/state/optimizer.bin": "03",
                   "eval/predictions_base_shuffled-images.jsonl": "04", "eval/results_base.json": "04",
                   "eval/responses_finetuned/test_AesP.json": "04", "eval/config_blind-prior.json": "04",
                   "figures/fig_radar_aesbench.png": "05", "tables/table_main_results.tex": "05",
                   "index.html": "05", "report.json": "05"}
    assert {rel: owner_of(rel) for rel in stage_files} == stage_files
    user_files = ["data/my_photos/holiday.jpg", "data/holiday.jpg", "data/images/sub/holiday.png",
                  "critiques/my_notes.txt", "instructions/draft.json", "train/my_model/model.bin",
                  "eval/my_bench.jsonl", "eval/responses_x", "figures/logo.png",
                  "figures/fig_mine/holiday.png", "tables/mine.csv", "notes.txt"]
    assert {rel: owner_of(rel) for rel in user_files} == dict.fromkeys(user_files)
    _write(tmp_path, [*stage_files, *user_files])
    (tmp_path / ".written-by-aes-companion").touch()   # a folder the project wrote: clearing deletes
    for number in sorted({n for _, n in OWNED_OUTPUTS}):
        clear_outputs(tmp_path, number)
    assert _listing(tmp_path) == sorted(user_files)


def test_os_litter_and_dot_files_do_not_make_a_fresh_folder_foreign(tmp_path):
    from aes_lib.runner import ForeignFolderError, claim_output_folder, clear_outputs

    _write(tmp_path / "fresh", [".DS_Store", "Thumbs.db", "desktop.ini", ".hidden"])
    claim_output_folder(tmp_path / "fresh")
    _write(tmp_path / "lab", ["data/manifest.json", ".DS_Store", "desktop.ini"])
    assert clear_outputs(tmp_path / "lab", "00_dataset") == 1
    assert _listing(tmp_path / "lab") == [".DS_Store", "desktop.ini"]   # the litter is not deleted
    _write(tmp_path / "foreign", [".DS_Store", "thesis.tex"])
    with pytest.raises(ForeignFolderError):
        claim_output_folder(tmp_path / "foreign")


def test_a_full_run_deletes_only_the_chains_executed_copies_and_logs(chain):
    out = chain / "out"
    _write(out, ["run_manifest.json", "notebooks/00_first.ipynb", "logs/01_second.log",
                 "notebooks/my_analysis.ipynb", "logs/my_training.log"])
    reproduce(_profile(chain, "{}"), chain / "notebooks", "out", cwd=chain, timeout=120)
    assert (out / "notebooks/my_analysis.ipynb").read_text() == "x"
    assert (out / "logs/my_training.log").read_text() == "x"
    assert (out / "notebooks/00_first.ipynb").read_text() != "x"   # replaced by this run's copy
    assert (out / "logs/01_second.log").read_text() != "x"


def test_reproduce_refuses_a_foreign_out_folder_unless_forced(chain):
    out = chain / "mine"
    _write(out, ["data/precious.txt", "notes.txt"])
    cmd = [sys.executable, "-m", "aes_lib.cli", "reproduce", "--profile", str(_profile(chain, "{}")),
           "--notebooks", str(chain / "notebooks"), "--out", str(out), "--timeout", "120"]
    proc = subprocess.run(cmd, cwd=chain, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and str(out) in errors[0] and "--force-clear" in errors[0]
    assert _listing(out) == ["data/precious.txt", "notes.txt"]   # nothing deleted, nothing run
    proc = subprocess.run(cmd + ["--force-clear"], cwd=chain, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _listing(out / "data") == ["precious.txt"]   # forced: still only the project's own files go
    assert (out / "notes.txt").exists() and (out / "first.txt").exists()
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["other_files"] == ["data/precious.txt", "notes.txt"]
    # from now on the folder is the project's: a second run needs no flag
    assert subprocess.run(cmd, cwd=chain, capture_output=True, text=True).returncode == 0


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


def test_make_clean_keeps_annotations_left_in_notebooks_outputs(tmp_path):
    """Older JupyterLab runs wrote notebooks/outputs/; the annotations made there are people's work."""
    import shutil

    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    _write(tmp_path, ["outputs/README.md", "outputs/data/manifest.json",
                      "notebooks/outputs/critiques/critiques.db", "notebooks/outputs/critiques/critiques.db-wal",
                      "notebooks/outputs/critiques/critiques.jsonl", "notebooks/outputs/data/manifest.json"])
    proc = subprocess.run(["make", "--no-print-directory", "clean"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "kept notebooks/outputs/critiques/critiques.db" in proc.stderr
    assert _listing(tmp_path) == ["Makefile", "notebooks/outputs/critiques/critiques.db",
                                  "notebooks/outputs/critiques/critiques.db-wal", "outputs/README.md"]
    (tmp_path / "notebooks/outputs/critiques/critiques.db").unlink()
    (tmp_path / "notebooks/outputs/critiques/critiques.db-wal").unlink()
    _write(tmp_path, ["notebooks/outputs/eval/results.csv"])
    proc = subprocess.run(["make", "--no-print-directory", "clean"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and "kept" not in proc.stderr
    assert not (tmp_path / "notebooks/outputs").exists()


def test_an_edited_notebook_is_warned_about_and_its_values_recorded(chain, caplog):
    """JupyterLab autosaves a student's edits into notebooks/: the runner says so, and the
    manifest records the values each notebook really ran with, not only the profile's."""
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], cwd=chain, check=True)
    subprocess.run(git + ["add", "notebooks"], cwd=chain, check=True)
    subprocess.run(git + ["commit", "-qm", "notebooks"], cwd=chain, check=True)
    path = chain / "notebooks" / "01_second.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source = nb.cells[0].source.replace('name = "b"', 'name = "mine"')
    nbformat.write(nb, path)
    profile = _profile(chain, "common: {seed: 1}\n")
    with caplog.at_level("WARNING", logger="aes_lib.runner"):
        reproduce(profile, chain / "notebooks", "out", cwd=chain, timeout=120)
    assert (chain / "out" / "mine.txt").exists()
    saved = json.loads((chain / "out" / "run_manifest.json").read_text())
    assert saved["parameters"]["01_second"] == {"out_dir": "out", "seed": 1, "rate": 0.5, "name": "mine"}
    assert saved["injected_parameters"]["01_second"] == {"seed": 1, "out_dir": "out"}
    assert saved["edited_notebooks"] == {"01_second": {"cells": [0], "parameters": {
        "name": {"committed": "b", "now": "mine"}}}}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "01_second.ipynb differs from the committed version" in warned[0]
    assert "name = 'mine'" in warned[0] and "git checkout notebooks/01_second.ipynb" in warned[0]
