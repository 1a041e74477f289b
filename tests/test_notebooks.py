"""Every committed notebook follows the house layout and holds no outputs."""

import nbformat
import pytest

from aes_lib.runner import notebook_parameters, notebooks_with_outputs

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_notebooks_hold_no_outputs():
    assert NOTEBOOKS, "no notebooks found"
    assert notebooks_with_outputs(REPO / "notebooks") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_layout(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert code[0].source.strip() == "from aes_lib.nb import setup; setup()"
    assert "parameters" in code[1].metadata.get("tags", [])
    params = notebook_parameters(path)
    assert {"out_dir", "seed"} <= set(params)
    assert "check_outputs(" in code[-1].source
    for cell in code:   # logic lives in aes_lib: no long functions in notebooks
        for block in cell.source.split("\ndef ")[1:]:
            assert len(block.splitlines()) <= 6, f"{path.name}: a notebook function is too long"
