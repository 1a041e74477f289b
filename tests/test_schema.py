import json

import pytest

from aes_lib.schema import (BenchItem, Critique, ImageRecord, Instruction, SchemaError, read_jsonl,
                            read_manifest, write_jsonl)


def _critique(**kw):
    base = dict(id="c1", image_id="img1", annotator="ann", annotator_kind="simulated",
                protocol_version="v1", grade="good",
                attributes={"composition": {"rating": 4, "word": "balanced"}},
                description="A balanced frame.")
    return {**base, **kw}


def test_round_trip_every_record(tmp_path):
    records = [
        ImageRecord(id="a", file="images/a.png", source_photo="a", split="train", strength=0.5),
        Critique.from_dict(_critique()),
        Instruction(id="i1", image_id="a", image="images/a.png", type="level_mcq", qtype="what",
                    conversations=[{"from": "human", "value": "<image>\nLevel?"}, {"from": "gpt", "value": "B"}],
                    options=["high", "medium", "low"], answer="B"),
        BenchItem(id="q1", image="a.png", dimension="AesA", question="Level?",
                  options=["high", "medium", "low"], answer="C"),
    ]
    for r in records:
        again = type(r).from_json(r.to_json())
        assert again == r
    path = tmp_path / "c.jsonl"
    write_jsonl(path, [records[1]])
    assert read_jsonl(path, Critique) == [records[1]]
    assert records[1].level == "high"


@pytest.mark.parametrize("change, field", [
    ({"grade": "superb"}, "grade"),
    ({"annotator_kind": "robot"}, "annotator_kind"),
    ({"attributes": {"composition": {"rating": 9}}}, "attributes.composition.rating"),
    ({"attributes": {"composition": {"rating": "4"}}}, "attributes.composition.rating"),
    ({"image_id": ""}, "image_id"),
    ({"colour": "red"}, "colour"),
])
def test_critique_errors_name_record_and_field(change, field):
    with pytest.raises(SchemaError) as e:
        Critique.from_dict(_critique(**change))
    assert e.value.field_name == field
    assert "critique 'c1'" in str(e.value)


def test_missing_field_is_named():
    data = _critique()
    del data["grade"]
    with pytest.raises(SchemaError, match="field 'grade': missing"):
        Critique.from_dict(data)


@pytest.mark.parametrize("conversations, field", [
    ([{"from": "human", "value": "no image token"}, {"from": "gpt", "value": "x"}], "conversations[0].value"),
    ([{"from": "gpt", "value": "<image>\nhi"}, {"from": "human", "value": "x"}], "conversations[0].from"),
    ([{"from": "human", "value": "<image>\nhi"}], "conversations"),
])
def test_instruction_conversation_errors(conversations, field):
    with pytest.raises(SchemaError) as e:
        Instruction(id="i", image_id="a", image="a.png", type="description", qtype="open",
                    conversations=conversations).validate()
    assert e.value.field_name == field


def test_multiple_choice_answer_must_be_an_option_letter():
    item = dict(id="q", image="a.png", dimension="AesP", question="?", options=["yes", "no"], answer="C")
    with pytest.raises(SchemaError, match="answer"):
        BenchItem.from_dict(item)
    with pytest.raises(SchemaError, match="unique"):
        BenchItem.from_dict({**item, "options": ["yes", "yes"], "answer": "A"})


def test_image_path_must_stay_inside_dataset():
    with pytest.raises(SchemaError, match="file"):
        ImageRecord.from_dict(dict(id="a", file="../../etc/passwd", source_photo="a", split="train"))


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(_critique()) + "\n" + json.dumps(_critique(id="c2", grade="meh")) + "\n")
    with pytest.raises(SchemaError) as e:
        read_jsonl(path, Critique)
    assert f"{path}:2" in str(e.value) and "'c2'" in str(e.value) and "grade" in str(e.value)
    path.write_text("{not json\n")
    with pytest.raises(SchemaError, match="not valid JSON"):
        read_jsonl(path, Critique)


def test_read_manifest_names_record_and_field(tmp_path):
    path = tmp_path / "manifest.json"
    good = ImageRecord(id="a", file="images/a.png", source_photo="a", split="train").to_dict()
    path.write_text(json.dumps({"images": [good, {**good, "id": "b"}]}))
    assert [r.id for r in read_manifest(path)] == ["a", "b"]
    path.write_text(json.dumps({"images": [good, {**good, "id": "b", "split": "holdout"}]}))
    with pytest.raises(SchemaError, match=r"images\[1\].*split"):
        read_manifest(path)
    path.write_text(json.dumps({"images": [good, good]}))
    with pytest.raises(SchemaError, match=r"images\[1\].*duplicate id 'a'"):
        read_manifest(path)
    path.write_text(json.dumps([good]))
    with pytest.raises(SchemaError, match="'images'"):
        read_manifest(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_manifest(tmp_path / "missing.json")


def test_consensus_grade_is_the_rounded_mean():
    from aes_lib.schema import consensus_grade

    assert consensus_grade(["good", "poor", "poor"]) == "fair"      # 2.67 -> 3
    assert consensus_grade(["good", "fair"]) == "good"              # 3.5 rounds half up
    assert consensus_grade(["bad", "bad", "excellent"]) == "poor"   # 2.33 -> 2
    assert consensus_grade(["excellent"]) == "excellent"
    with pytest.raises(ValueError):
        consensus_grade([])
