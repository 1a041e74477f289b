"""The reported numbers in aes_lib/assets/reported_results.yaml match the published text they cite.

AesBench's numbers are checked against ``aes_lib/assets/aesbench_readme_leaderboard.md``, a stored
copy of the four leaderboard tables of AesBench's GitHub README (revision 9367974, 2024-07-18;
removed in a later revision), not against a second hand-typed copy. AesMMIT's size is checked
against the paper's abstract as PAPER_FACTS.md collects it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aes_lib.report.reference import REFERENCE_FILE, load_reference, validate_reference

README_COPY = REFERENCE_FILE.parent / "aesbench_readme_leaderboard.md"
#: The README table column of each group the reference file names.
README_COLUMNS = {("AesP", "attribute"): {"technical_quality": "Tec. Qua.", "color_light": "Col. Lig.",
                                          "composition": "Comp.", "content": "Content"},
                  ("AesP", "source"): {"NIs": "NIs", "AIs": "AIs", "AGIs": "AGIs"},
                  ("AesP", "qtype"): {"yes-no": "Yes-No", "what": "What", "how": "How", "why": "Why"},
                  ("AesA", "source"): {"NIs": "NIs", "AIs": "AIs", "AGIs": "AGIs"}}
#: The reference file's benchmark columns: (README section, README column).
OVERALL_COLUMNS = {"AesP": ("AesP", "Overall"), "AesE": ("AesE", "Overall"), "AesA": ("AesA", "Overall"),
                   "AesI_relevance": ("AesI", "Relevance"), "AesI_precision": ("AesI", "Precision"),
                   "AesI_completeness": ("AesI", "Completeness"), "AesI_overall": ("AesI", "Overall")}


def readme_tables(path: Path = README_COPY) -> dict[str, dict[str, dict[str, str]]]:
    """``{section: {model: {column: cell}}}`` of the stored README tables, cells as written
    (``"72.08%"``, ``"1.120"``)."""
    tables: dict[str, dict[str, dict[str, str]]] = {}
    section, header = "", []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section, header = line[3:].strip(), []
        elif line.startswith("|") and section:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not header:
                header = cells
            elif not set(cells[0]) <= set(":-"):
                tables.setdefault(section, {})[cells[1]] = dict(zip(header[2:], cells[2:]))
    return tables


def same(value: float, published: str) -> bool:
    """The file's number equals the published one as written (e.g. 1.120 == 1.12, 72.08%)."""
    return float(value) == float(published.rstrip("%"))


@pytest.fixture(scope="module")
def ref():
    return load_reference()


def test_readme_copy_holds_the_four_leaderboards():
    tables = readme_tables()
    assert list(tables) == ["AesP", "AesE", "AesA", "AesI"]
    assert all(len(rows) == 16 for rows in tables.values())
    assert tables["AesP"]["GPT-4V"]["Overall"] == "72.08%" and tables["AesI"]["LLaVA-1.5"]["Overall"] == "1.157"


def test_leaderboard_matches_the_readme_copy(ref):
    tables = readme_tables()
    models = ref["benchmark"]["models"]
    assert len(models) == 6
    for model, row in models.items():
        assert set(row) == set(OVERALL_COLUMNS)
        for key, value in row.items():
            section, column = OVERALL_COLUMNS[key]
            published = tables[section][model][column]
            assert same(value, published), f"{model} {key}: {value} != README {published}"


def test_breakdowns_match_the_readme_copy(ref):
    tables = readme_tables()
    seen = set()
    for item in ref["breakdowns"]:
        assert item["source"] == "aesbench"
        key = (item["dimension"], item["group_by"])
        columns = README_COLUMNS[key]
        assert set(item["values"]) == set(columns), key
        for group, value in item["values"].items():
            published = tables[item["dimension"]][item["model"]][columns[group]]
            assert same(value, published), (key, group, value, published)
        seen.add(key)
    assert seen == set(README_COLUMNS)


def test_aesbench_source_is_the_readme_not_the_paper(ref):
    src = ref["sources"][ref["benchmark"]["source"]]
    assert "README" in src["citation"] and "9367974" in src["citation"] and "2024-07-18" in src["citation"]
    assert "9367974" in src["short"] and "README" in src["short"]
    assert "arxiv.org" not in src["url"]
    from aes_lib.report.reference import source_detail

    assert source_detail(ref, "aesbench") == ("reported by AesBench (AesBench README leaderboard, "
                                              "rev. 9367974, 2024-07-18)")


PUBLISHED_DATASET = """
- AesMMIT dataset: 21,904 images from diverse sources; 88K human natural-language feedbacks,
  collected through *progressive questions* that go from a coarse aesthetic grade down to a
  fine-grained aesthetic description; GPT then refines the critiques and assembles 409K
  multi-typed instructions.
"""


def test_dataset_numbers_match_published(ref):
    text = " ".join(PUBLISHED_DATASET.split())
    values = ref["dataset"]["values"]
    assert f"{values['images']:,} images" in text
    assert f"{values['human_feedbacks']} human natural-language feedbacks" in text
    assert f"{values['instructions']} multi-typed instructions" in text
    assert ref["sources"][ref["dataset"]["source"]]["citation"].endswith("arXiv 2404.09624")


def test_every_source_is_labelled_as_reported(ref):
    assert len(ref["sources"]) >= 2   # the loop below looked at the paper's sources
    for key, src in ref["sources"].items():
        assert src["label"].startswith("reported by "), key


def test_published_text_is_still_what_paper_facts_says():
    """When the shared notes are present, the dataset text above must still be in them verbatim."""
    facts = Path(__file__).resolve().parents[2] / "shared" / "PAPER_FACTS.md"
    if not facts.exists():
        pytest.skip(f"{facts} not present (optional cross-check)")
    squash = lambda s: " ".join(s.split())  # noqa: E731
    text = squash(facts.read_text(encoding="utf-8"))
    assert squash(PUBLISHED_DATASET) in text


def test_validation_names_the_bad_entry(ref):
    import copy

    bad = copy.deepcopy(ref)
    bad["benchmark"]["models"]["GPT-4V"]["AesP"] = 172.08
    with pytest.raises(ValueError, match=r"benchmark\.models\.GPT-4V\.AesP"):
        validate_reference(bad, "x.yaml")
    bad = copy.deepcopy(ref)
    bad["sources"]["aesbench"]["label"] = "AesBench"
    with pytest.raises(ValueError, match=r"sources\.aesbench\.label"):
        validate_reference(bad, "x.yaml")
    bad = copy.deepcopy(ref)
    del bad["benchmark"]["models"]["LLaVA-1.5"]["AesI_overall"]
    with pytest.raises(ValueError, match="LLaVA-1.5"):
        validate_reference(bad, "x.yaml")


def test_reference_file_is_package_data():
    assert REFERENCE_FILE.parent.name == "assets" and REFERENCE_FILE.exists()
