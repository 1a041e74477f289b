"""The reported numbers in aes_lib/assets/reported_results.yaml match the published text they cite.

PUBLISHED below is copied verbatim from the sources the file names (AesBench's README
leaderboard, arXiv 2401.08276; AesExpert's abstract, arXiv 2404.09624), as collected in the
project's PAPER_FACTS.md. Every number in the reference file must appear here, and every number
here must be in the reference file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aes_lib.report.reference import BENCH_COLUMNS, REFERENCE_FILE, load_reference, validate_reference

PUBLISHED_LEADERBOARD = """
| model | AesP | AesE | AesA | AesI rel | AesI prec | AesI comp | AesI overall |
|---|---|---|---|---|---|---|---|
| GPT-4V | 72.08 | 70.16 | 50.86 | 1.385 | 1.151 | 1.366 | 1.301 |
| Gemini Pro Vision | 71.99 | 71.37 | 49.38 | 1.416 | 1.087 | 1.164 | 1.222 |
| LLaVA-1.5 | 66.32 | 68.32 | 45.46 | 1.397 | 0.953 | 1.120 | 1.157 |
| Q-Instruct | 72.61 | 72.68 | 52.86 | 1.222 | 0.939 | 0.898 | 1.020 |
| mPLUG-Owl2 | 67.89 | 69.89 | 50.57 | 1.402 | 1.016 | 1.130 | 1.182 |
| SPHINX-MoE | 72.93 | 73.32 | 49.93 | 1.501 | 1.171 | 1.130 | 1.267 |
"""

PUBLISHED_BREAKDOWNS = """
  GPT-4V's AesP by attribute: Technical Quality 69.02, Color & Light 74.66, Composition 71.72,
  Content 65.57; by source: NIs 75.67, AIs 72.58, AGIs 65.82; by type: Yes-No 68.93, What
  64.67, How 76.70, Why 84.46. GPT-4V's AesA by source: NIs 59.98, AIs 46.92, AGIs 40.59.
"""

PUBLISHED_DATASET = """
- AesMMIT dataset: 21,904 images from diverse sources; 88K human natural-language feedbacks,
  collected through *progressive questions* that go from a coarse aesthetic grade down to a
  fine-grained aesthetic description; GPT then refines the critiques and assembles 409K
  multi-typed instructions.
"""

BREAKDOWN_NAMES = {"technical_quality": "Technical Quality", "color_light": "Color & Light",
                   "composition": "Composition", "content": "Content", "yes-no": "Yes-No",
                   "what": "What", "how": "How", "why": "Why", "NIs": "NIs", "AIs": "AIs", "AGIs": "AGIs"}


def parse_leaderboard(text: str) -> dict[str, list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.strip().splitlines()[2:]]
    return {r[0]: r[1:] for r in rows}


def same(value: float, published: str) -> bool:
    """The file's number equals the published one as written (e.g. 1.120 == 1.12)."""
    return float(value) == float(published)


@pytest.fixture(scope="module")
def ref():
    return load_reference()


def test_leaderboard_matches_published(ref):
    published = parse_leaderboard(PUBLISHED_LEADERBOARD)
    models = ref["benchmark"]["models"]
    assert list(models) == list(published)
    for model, values in published.items():
        for key, text in zip(BENCH_COLUMNS, values):
            assert same(models[model][key], text), f"{model} {key}: {models[model][key]} != {text}"


def test_breakdowns_match_published(ref):
    text = " ".join(PUBLISHED_BREAKDOWNS.split())
    sections = {("AesP", "attribute"): r"AesP by attribute: (.*?); by source",
                ("AesP", "source"): r"AesP by attribute: .*?by source: (.*?); by type",
                ("AesP", "qtype"): r"by type: (.*?)\. GPT-4V's AesA",
                ("AesA", "source"): r"AesA by source: (.*?)\.$"}
    seen = set()
    for item in ref["breakdowns"]:
        assert item["model"] == "GPT-4V" and item["source"] == "aesbench"
        key = (item["dimension"], item["group_by"])
        section = re.search(sections[key], text).group(1)
        published = {name.strip(): num for name, num in re.findall(r"([A-Za-z&\- ]+?) (\d+\.\d+)", section)}
        assert {BREAKDOWN_NAMES[g] for g in item["values"]} == set(published), key
        for group, value in item["values"].items():
            assert same(value, published[BREAKDOWN_NAMES[group]]), (key, group)
        seen.add(key)
    assert seen == set(sections)


def test_dataset_numbers_match_published(ref):
    text = " ".join(PUBLISHED_DATASET.split())
    values = ref["dataset"]["values"]
    assert f"{values['images']:,} images" in text
    assert f"{values['human_feedbacks']} human natural-language feedbacks" in text
    assert f"{values['instructions']} multi-typed instructions" in text
    assert ref["sources"][ref["dataset"]["source"]]["citation"].endswith("arXiv 2404.09624")
    assert ref["sources"][ref["benchmark"]["source"]]["citation"].endswith("arXiv 2401.08276")


def test_every_source_is_labelled_as_reported(ref):
    for key, src in ref["sources"].items():
        assert src["label"].startswith("reported by "), key


def test_published_text_is_still_what_paper_facts_says():
    """When the shared notes are present, the text above must still be in them verbatim."""
    facts = Path(__file__).resolve().parents[2] / "shared" / "PAPER_FACTS.md"
    if not facts.exists():
        pytest.skip(f"{facts} not present (optional cross-check)")
    squash = lambda s: " ".join(s.split())  # noqa: E731
    text = squash(facts.read_text(encoding="utf-8"))
    for block in (PUBLISHED_LEADERBOARD, PUBLISHED_BREAKDOWNS, PUBLISHED_DATASET):
        assert squash(block) in text


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
