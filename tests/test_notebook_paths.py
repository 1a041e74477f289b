"""Relative paths in the notebooks mean the same wherever the kernel starts (issue #12)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from aes_lib.nb import find_project_root

from conftest import REPO


def make_project(root: Path, notebooks: list[str]) -> Path:
    """A checkout-shaped folder: pyproject.toml, the aes_lib package (linked) and some notebooks."""
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "aes_lib").symlink_to(REPO / "aes_lib")
    for name in notebooks:
        shutil.copy(REPO / "notebooks" / name, root / "notebooks" / name)
    return root


def test_project_root_is_found_from_any_folder_inside_a_checkout(tmp_path):
    assert find_project_root(REPO / "notebooks") == REPO
    assert find_project_root(REPO / "aes_lib" / "collect") == REPO
    assert find_project_root(REPO) == REPO
    assert find_project_root(tmp_path) is None


def test_every_notebook_declares_the_project_kernel():
    paths = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(paths) >= 6   # the loop below looked at every numbered notebook
    for path in paths:
        assert nbformat.read(path, as_version=4).metadata["kernelspec"]["name"] == "aes-companion", path.name


@pytest.mark.slow
def test_a_kernel_started_in_notebooks_writes_to_the_project_outputs(tmp_path):
    """JupyterLab starts the kernel in notebooks/: out_dir = "outputs" must still be <project>/outputs."""
    import papermill as pm

    project = make_project(tmp_path / "project", ["00_dataset.ipynb"])
    pm.execute_notebook(str(project / "notebooks" / "00_dataset.ipynb"), str(tmp_path / "00.ipynb"),
                        cwd=str(project / "notebooks"), kernel_name="python3", progress_bar=False,
                        parameters={"photos": ["coffee", "rocket"], "max_side": 32})
    assert (project / "outputs" / "data" / "manifest.json").is_file()
    assert not (project / "notebooks" / "outputs").exists()


def test_the_runner_started_in_a_subfolder_keeps_manifest_and_outputs_together(tmp_path):
    """`cd notebooks && aes reproduce --notebooks . --out out`: the kernel must not move to the
    project root, or the outputs land in <project>/out and the manifest in notebooks/out."""
    from aes_lib.runner import reproduce

    project = make_project(tmp_path / "project", [])
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('out_dir = "outputs"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from aes_lib.nb import setup\nsetup()\nfrom pathlib import Path\n"
        "Path(out_dir).mkdir(exist_ok=True)\nPath(out_dir, 'written.txt').write_text('x')")]
    nbformat.write(nb, project / "notebooks" / "00_write.ipynb")
    (tmp_path / "p.yaml").write_text("{}")
    here = project / "notebooks"
    manifest = reproduce(tmp_path / "p.yaml", ".", "out", cwd=here, timeout=120)
    assert manifest["status"] == "ok"
    assert (here / "out" / "run_manifest.json").is_file() and (here / "out" / "written.txt").is_file()
    assert "written.txt" in manifest["produced_by"]
    assert not (project / "out").exists()
