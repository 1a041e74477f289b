"""Simulated critiques read as English with every photo's recorded traits: their sentences reach
instructions and benchmark references word for word."""

from __future__ import annotations

import re
import string
from importlib import resources

import pytest
import yaml

from aes_lib.collect.simulate import simulation_bank, with_article

PHOTOS = yaml.safe_load((resources.files("aes_lib") / "assets" / "photos.yaml").read_text("utf-8"))["photos"]
BANK = simulation_bank()
PHRASE_TRAITS = ("palette", "composition")   # noun phrases without an article


def _facts(traits: dict) -> dict:
    return {"subject": traits["subject"], "palette": traits["palette"], "mood": traits["mood"],
            "a_mood": with_article(traits["mood"]), "composition": traits["composition"],
            "interest": traits["interest"]}


def _rendered():
    for photo in PHOTOS:
        facts = _facts(photo["traits"])
        for key in ("openings", "composition_sentences", "interest_sentences"):
            for template in BANK[key]:
                yield photo["id"], template, facts, template.format(**facts)


def test_the_reported_slips_are_gone():
    text = " ".join(s for _, _, _, s in _rendered())
    assert "the muted greens and greys colours" not in text
    assert "it is centred half-length portrait" not in text.lower()


def test_articles_agree_with_the_next_word():
    for pid, _, _, s in _rendered():
        assert not re.search(r"\ba [aeiouAEIOU]", s), (pid, s)
        assert not re.search(r"\ban [^aeiouAEIOU\W]", s), (pid, s)


@pytest.mark.parametrize("trait", PHRASE_TRAITS)
def test_phrase_traits_stand_where_a_bare_phrase_reads_right(trait):
    """A palette or composition phrase is never glued to a noun after it ("greys colours") nor
    made the complement of "is" ("it is centred half-length portrait")."""
    field = "{" + trait + "}"
    for pid, template, facts, s in _rendered():
        if field not in template:
            continue
        before, after = template.split(field, 1)
        assert after[:1] in set(string.punctuation), (pid, template)
        assert not re.search(r"\b(is|are|was)\s*$", before), (pid, template)
        assert facts[trait] in s


def test_with_article():
    assert [with_article(w) for w in ("calm", "airy", "ominous", "proud")] == [
        "a calm", "an airy", "an ominous", "a proud"]
