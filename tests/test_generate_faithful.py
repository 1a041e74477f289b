"""Instructions say what the critique says: premises and answers agree with its ratings, answers
come from its words, greetings never reach an answer. Run on PCCD-shaped reviews (real reviewers'
habits: greetings, a flaw mentioned in passing under a top score, a praised blurred background)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aes_lib.cli import main as aes_main
from aes_lib.generate import GenerateConfig, generate
from aes_lib.generate.faithful import contradiction, instruction_contradiction, question_of
from aes_lib.generate.offline import assemble, clean_text, load_templates, refine
from aes_lib.schema import Critique, Instruction, read_jsonl

TESTS = Path(__file__).resolve().parent
PCCD_FIXTURES = [TESTS / "fixtures_generate" / "pccd_reviews.json", TESTS / "fixtures_collect" / "pccd_messy.json"]
T = load_templates("offline_v2")
BAND = {1: "low", 2: "low", 3: "mid", 4: "high", 5: "high"}
GREETING = re.compile(r"^(hi|hello|hey|howdy|dear|greetings)\b|^[A-Z][a-z]+ ?[,-]", re.I)
WEAKNESS_QUESTIONS = {q for qs in T["defect_questions"]["why"].values() for q in qs}
DEFECT_NAMES = {s["name"] for s in T["defects"].values()}


@pytest.fixture(scope="module")
def pccd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pccd")
    for f in PCCD_FIXTURES:
        assert aes_main(["collect", "import", str(f), "--format", "pccd", "--out", str(out)]) == 0
    result = generate(GenerateConfig(unlisted_images="hash_split"), out, manifest=None, progress=False)
    ins = read_jsonl(out / "instructions" / "instructions.jsonl", Instruction)
    crit = {c.id: c for c in read_jsonl(out / "critiques" / "critiques.jsonl", Critique)}
    return out, result, ins, crit


def _correct(i: Instruction) -> str:
    return i.options[ord(i.answer) - ord("A")]


def test_pccd_questions_presume_only_what_the_ratings_say(pccd_run):
    _, result, ins, crit = pccd_run
    assert result["stats"]["contradicted"] == {"drafted": 0, "kept": 0, "kept_ids": []}
    weakness_asked = 0
    for i in ins:
        if not i.options or not i.attribute:
            continue
        rating = crit[i.critique_ids[0]].attributes[i.attribute]["rating"]
        q = question_of(i)
        if q in WEAKNESS_QUESTIONS:  # "Why do the colour and light of this photo fall short?"
            weakness_asked += 1
            assert BAND[rating] == "low", (i.id, q, rating)
        right = _correct(i).removeprefix("because it is ")
        if right in DEFECT_NAMES or (right == "Yes" and any(n in q for n in DEFECT_NAMES)):
            assert BAND[rating] != "high", (i.id, q, right, rating)
    assert weakness_asked >= 2  # the blurred street and the cropped portrait, rated 1-2, are asked why
    # the tart rated 10/10 everywhere, its blown highlight mentioned in passing: no flaw asked
    tart = [i for i in ins if i.image_id == "tart" and i.options and i.attribute]
    assert tart and not any(_correct(i).removeprefix("because it is ") in DEFECT_NAMES for i in tart)


def test_pccd_answers_use_only_the_reviewers_words(pccd_run):
    _, _, ins, crit = pccd_run
    words = [i for i in ins if i.qtype in ("what", "why") and i.attribute
             and _correct(i).removeprefix("because it is ") not in DEFECT_NAMES
             and _correct(i) not in T["none_option"].values()]
    for i in words:  # a word answer must be the reviewer's word; PCCD gives none
        given = (crit[i.critique_ids[0]].attributes[i.attribute].get("word") or "").lower()
        assert given and given in _correct(i).lower(), (i.id, _correct(i))


def test_pccd_description_answers_start_without_a_greeting(pccd_run):
    _, _, ins, _ = pccd_run
    desc = [i.conversations[1]["value"] for i in ins if i.type == "description"]
    assert len(desc) >= 7
    assert [d for d in desc if GREETING.match(d)] == []
    assert not any("thank you for coming back" in d.lower() or "thanks for choosing" in d.lower() for d in desc)


@pytest.mark.parametrize("raw, want", [
    ("Hi Jason: the light is lovely.", "The light is lovely."),
    ("Hey Leonard the horizon tilts.", "The horizon tilts."),
    ("Hello Nick -Thanks for choosing me! It has charm.", "It has charm."),
    ("Hi there Judith and thank you for coming back to me. Nice frame.", "Nice frame."),
    ("Dear Freda - this is a lovely photo", "This is a lovely photo."),
    ("Hi Sophie Nice work", "Nice work."),
    ("Leonard, you are improving.", "You are improving."),
    ("Hi, Mary. Thanks for sending it. Good light.", "Good light."),
    ("Overall, a strong image.", "Overall, a strong image."),          # not an address
    ("Technically, it is fine.", "Technically, it is fine."),
    ("Subject: a lady bird.", "Subject: a lady bird."),                # a joined PCCD label
    ("Highlights are blown.", "Highlights are blown."),
])
def test_greetings_and_addresses_are_removed(raw, want):
    assert clean_text(raw) == want


def _tart() -> Critique:
    return Critique(id="tart", image_id="tart", annotator="r", annotator_kind="imported",
                    protocol_version="import:pccd", grade="excellent",
                    attributes={a: {"rating": 5, "word": None} for a in
                                ("technical_quality", "color_light", "composition", "content")},
                    description="A mouth-watering picture; one highlight on the glaze is a touch blown.")


def test_the_check_flags_a_weakness_asked_of_a_top_rated_attribute():
    tart = _tart()
    options = ["because it is overexposed", "because it is tilted", "because it is noisy"]
    why = "Why do the colour and light of this photo fall short?"
    assert "takes a low color_light for granted" in contradiction(why, options, 0, "color_light", tart, T)
    what = "How would you describe the colour and light of this photo?"
    assert "names a flaw" in contradiction(what, ["overexposed", "natural, well-balanced colour and light"],
                                           0, "color_light", tart, T)
    assert contradiction(what, ["overexposed", "natural, well-balanced colour and light"], 1,
                         "color_light", tart, T) is None
    assert "takes a low" in contradiction("What lets down the composition here?", ["a", "b"], 0,
                                          "composition", tart, T)
    assert contradiction("Which flaw, if any, does it have?", ["none", "x"], 0, "composition", tart, T) is None
    low = Critique.from_dict({**tart.to_dict(), "attributes": {"color_light": {"rating": 2, "word": None}}})
    assert contradiction(why, options, 0, "color_light", low, T) is None
    assert "says nothing is wrong" in contradiction(what, ["overexposed", "natural, well-balanced colour and light"],
                                                    1, "color_light", low, T)
    strength = "Why is the color and light of this image good?"
    assert "takes a high" in contradiction(strength, ["Because its color and light is rich.", "x"], 0,
                                           "color_light", low, T)


def test_the_tart_gets_no_flaw_question_and_every_item_passes_the_check():
    tart = _tart()
    r = refine(tart, T)
    drafts = assemble(tart, r, T, 0, 2, 2, ("level", "description", "interpretation"), n_defect=6)
    mcq = [d for d in drafts if "options" in d and d["attribute"]]
    assert mcq
    for d in mcq:
        assert contradiction(d["question"], d["options"], d["correct"], d["attribute"], tart, T) is None, d
        assert d["question"] not in WEAKNESS_QUESTIONS


def test_the_summary_reports_contradicted_questions(tmp_path, capsys):
    assert aes_main(["collect", "import", str(PCCD_FIXTURES[0]), "--format", "pccd", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert aes_main(["generate", "--out", str(tmp_path), "--manifest", "none", "--unlisted-images",
                     "hash_split", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "questions contradicting the critique's ratings: 0 kept (goal 0), 0 drafted and rejected" in out
    stats = json.loads((tmp_path / "instructions" / "stats.json").read_text())
    assert stats["contradicted"]["kept"] == 0


def test_the_check_reads_finished_instructions():
    """The count in stats.json reads the finished items: one that slipped past the checks is seen."""
    tart = _tart()
    bad = Instruction(id="tart-x", image_id="tart", image="tart.jpg", type="perception_mcq", qtype="why",
                      conversations=[{"from": "human", "value": "<image>\nWhy do the colour and light of this "
                                      "photo fall short?\nChoose one from the following options:\nA. x\nB. y"},
                                     {"from": "gpt", "value": "A. because it is overexposed"}],
                      split="train", attribute="color_light",
                      options=["because it is overexposed", "because it is tilted"], answer="A",
                      critique_ids=["tart"], prompt_version="offline_v2", generator="offline")
    assert instruction_contradiction(bad, tart, T)
