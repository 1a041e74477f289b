"""The notebooks read as lessons: exercises that name a parameter, parameters papermill parses."""

from __future__ import annotations

import logging
import re

import nbformat
import pytest

from aes_lib.runner import notebook_parameters

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_ends_with_exercises_that_name_a_parameter(path):
    nb = nbformat.read(path, as_version=4)
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Exercises"), path.name
    items = re.findall(r"^\d+\. (.+)$", last.source, flags=re.M)
    assert 2 <= len(items) <= 3, path.name
    params = notebook_parameters(path)
    for item in items:
        named = re.match(r"`(\w+) = ", item)
        assert named and named.group(1) in params, f"{path.name}: {item[:60]!r} names no parameter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_without_warnings(path, caplog):
    """A comment holding '=' made papermill skip the line: 'Unable to parse', 'unknown parameter'."""
    from papermill.translators import PythonTranslator

    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    with caplog.at_level(logging.WARNING, logger="papermill"):
        names = {p.name for p in PythonTranslator.inspect(cell)}
    assert names == set(notebook_parameters(path))
    assert not [r for r in caplog.records if r.name.startswith("papermill")]


def test_check_outputs_shows_no_list_of_paths(tmp_path):
    from aes_lib.nb import check_outputs

    (tmp_path / "a.txt").write_text("x")
    assert check_outputs([tmp_path / "a.txt"]) is None
    with pytest.raises(RuntimeError, match="missing"):
        check_outputs([tmp_path / "b.txt"])


def test_text_progress_bars_keep_their_last_state(monkeypatch, capsys):
    import tqdm.auto

    from aes_lib.nb import use_text_progress_bars

    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.auto.tqdm)   # restored after the test
    use_text_progress_bars()
    from tqdm.auto import tqdm

    for _ in tqdm(range(400), desc="train"):
        pass
    out = capsys.readouterr().out
    assert "400/400" in out.splitlines()[-1].split("\r")[-1] and "0/400" in out


def test_preview_is_a_small_jpeg_no_wider_than_asked(tmp_path):
    from PIL import Image

    from aes_lib.nb import preview

    Image.effect_noise((2000, 1000), 60).convert("RGB").save(tmp_path / "big.png")
    shown = preview(tmp_path / "big.png", width=900)
    assert shown.width == 900 and shown.data[:2] == b"\xff\xd8"          # JPEG
    assert len(shown.data) < (tmp_path / "big.png").stat().st_size / 4


def test_an_exercise_that_deletes_data_says_what_it_does_later_and_how_to_go_back():
    """Notebook 00's `photos` exercise rebuilds the dataset without the other photos: it must
    warn that later notebooks' critiques no longer match, and say how to undo it."""
    nb = nbformat.read(REPO / "notebooks" / "00_dataset.ipynb", as_version=4)
    item = next(line for line in nb.cells[-1].source.splitlines() if line.startswith("2. `photos = ["))
    assert "notebook 02" in item and "error" in item
    assert "`photos = []`" in item and "01 and 02" in item
