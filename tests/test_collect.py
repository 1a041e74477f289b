"""Critique collection: protocol, store, simulated annotators, importers, statistics, CLI."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from aes_lib import collect
from aes_lib.cli import main as aes_main
from aes_lib.collect.importers import ImportOptions, import_file, resolve_image, RowError
from aes_lib.collect.protocol import load_protocol, protocol_from_dict
from aes_lib.collect.simulate import SimulateConfig, simulate_critique, simulate_critiques
from aes_lib.collect.stats import compute_stats, consensus_rows, ordinal_alpha
from aes_lib.collect.store import CritiqueStore
from aes_lib.schema import ATTRIBUTES, DEGRADATIONS, GRADES, Critique, ImageRecord, read_jsonl

FIXTURES = Path(__file__).parent / "fixtures_collect"


def make_image(id_, degradation="none", strength=0.0, base_grade="good", split="train"):
    return ImageRecord(id=id_, file=f"images/{id_}.png", source_photo=id_.split("__")[0], split=split,
                       title="a red cup", degradation=degradation, strength=strength,
                       traits={"subject": "a red coffee cup on a saucer", "mood": "calm",
                               "palette": "warm browns and creams", "composition": "centred close-up",
                               "base_grade": base_grade, "interest": "the steam and texture"})


def make_critique(image_id, annotator, grade="good", rating=4, kind="human", description="fine"):
    return Critique(id=f"{annotator}:{image_id}", image_id=image_id, annotator=annotator,
                    annotator_kind=kind, protocol_version="test@1", grade=grade,
                    attributes={a: {"rating": rating, "word": None} for a in ATTRIBUTES},
                    description=description)


# --- protocol -------------------------------------------------------------------------------

def test_default_protocol_follows_the_paper_levels():
    p = load_protocol()
    assert p.id == "aesexpert-default@1.0"
    assert p.grade_keys == list(GRADES)
    assert {g.key: g.level for g in p.grades} == {"excellent": "high", "good": "high", "fair": "medium",
                                                  "poor": "low", "bad": "low"}
    assert p.attribute_keys == list(ATTRIBUTES)
    assert p.description.required and p.description.min_words > 0
    assert not p.suggestion.required


def test_protocol_validation_names_each_problem():
    p = load_protocol()
    assert p.validate_step("grade", {"grade": None}) == ["choose an overall grade"]
    assert p.validate_step("grade", {"grade": "good"}) == []
    problems = p.validate_step("attributes", {"attributes": {"technical_quality": {"rating": 9}}})
    assert "Technical quality: rating must be 1-5" in problems
    assert "rate Composition" in problems
    assert p.validate_step("text", {"description": "too short", "suggestion": ""}) == [
        f"the description needs at least {p.description.min_words} words (has 2)"]
    assert p.validate_step("text", {"description": "", "suggestion": ""}) == ["write a description"]


def test_protocol_is_editable_without_code(tmp_path):
    import yaml

    data = yaml.safe_load((Path(collect.__file__).parents[1] / "protocols" / "default.yaml").read_text())
    data["version"] = "2.0-lab"
    data["attributes"] = [a for a in data["attributes"] if a["key"] in ("composition", "emotion")]
    data["attributes"][0]["word_required"] = True
    data["description"]["min_words"] = 3
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    p = load_protocol(path)
    assert p.id == "aesexpert-default@2.0-lab"
    assert p.attribute_keys == ["composition", "emotion"]
    answers = {"attributes": {"composition": {"rating": 3, "word": ""}, "emotion": {"rating": 2}}}
    assert p.validate_step("attributes", answers) == ["Composition: give a word"]
    assert p.validate_step("text", {"description": "three words here"}) == []


def test_protocol_errors_name_the_key():
    with pytest.raises(ValueError, match="grade.options keys must be the five grades"):
        protocol_from_dict({"name": "x", "version": "1", "grade": {"options": [{"key": "good"}]},
                            "attributes": []}, "bad.yaml")
    with pytest.raises(ValueError, match=r"bad.yaml: attributes\[0\]: key 'beauty'"):
        protocol_from_dict({"name": "x", "version": "1",
                            "grade": {"options": [{"key": g} for g in GRADES]},
                            "attributes": [{"key": "beauty"}]}, "bad.yaml")
    with pytest.raises(FileNotFoundError, match="no file aes_lib/protocols/nope.yaml"):
        load_protocol("nope")


# --- store ----------------------------------------------------------------------------------

def test_store_commits_each_submit_in_wal_mode(tmp_path):
    db = tmp_path / "c.db"
    store = CritiqueStore(db)
    assert store.journal_mode == "wal"
    store.submit(make_critique("img1", "alice"))
    # a second, independent connection sees the row at once: it was committed
    row = sqlite3.connect(db).execute("SELECT annotator, grade, protocol_version FROM critiques").fetchall()
    assert row == [("alice", "good", "test@1")]
    store.submit(make_critique("img1", "alice", grade="bad"))  # same id: replaced
    assert [c.grade for c in store.critiques()] == ["bad"]
    store.record_event("flag", "img2", "alice", "broken image")
    assert store.done_image_ids("alice") == {"img1", "img2"}
    assert store.events("flag")[0]["reason"] == "broken image"
    with pytest.raises(ValueError, match="field 'grade'"):
        store.submit(make_critique("img3", "alice", grade="superb"))
    assert store.count() == 1
    store.close()


# --- simulated annotators -----------------------------------------------------------------

def test_simulation_follows_the_recorded_ground_truth():
    clean, over = make_image("cup__original"), make_image("cup__overexposed", "overexposed", 1.0)
    cfg = SimulateConfig(n_annotators=5, annotators_per_image=5, seed=0, noise_sd=0.2, bias_sd=0.1)
    cs = simulate_critiques([clean, over], "p@1", cfg)
    by = {i: [c for c in cs if c.image_id == i] for i in (clean.id, over.id)}
    assert all(c.annotator_kind == "simulated" for c in cs) and len(cs) == 10
    for attr in ("technical_quality", "color_light"):
        mean = {i: sum(c.rating(attr) for c in v) / len(v) for i, v in by.items()}
        assert mean[over.id] <= mean[clean.id] - 1.5, attr
    assert all("highlights" in c.description for c in by[over.id])
    assert all("red coffee cup" in c.description and "warm browns" in c.description
               and "calm" in c.description for c in cs)


@pytest.mark.parametrize("kind", [d for d in DEGRADATIONS if d != "none"])
def test_every_degradation_lowers_its_attribute(kind):
    import yaml

    bank = yaml.safe_load((Path(collect.__file__).parents[1] / "assets" / "collect_simulation.yaml").read_text())
    worst_attr = max(bank["degradations"][kind]["drops"].items(), key=lambda kv: kv[1])[0]
    img, clean = make_image(f"cup__{kind}", kind, 1.0), make_image("cup__original")
    a = simulate_critique(img, "sim-01", "p@1", seed=3, bias_sd=0, noise_sd=0)
    b = simulate_critique(clean, "sim-01", "p@1", seed=3, bias_sd=0, noise_sd=0)
    assert a.rating(worst_attr) < b.rating(worst_attr)
    assert any(d in a.description for d in bank["degradations"][kind]["defects"])


def test_simulation_is_deterministic_per_seed():
    imgs = [make_image(f"cup__v{i}", "blur", i / 4) for i in range(5)]
    cfg = SimulateConfig(n_annotators=4, annotators_per_image=2, seed=1)
    first = [c.to_json() for c in simulate_critiques(imgs, "p@1", cfg)]
    assert first == [c.to_json() for c in simulate_critiques(imgs, "p@1", cfg)]
    other = [c.to_json() for c in simulate_critiques(imgs, "p@1", SimulateConfig(n_annotators=4,
                                                                                  annotators_per_image=2, seed=2))]
    assert first != other
    per_image = {}
    for c in map(json.loads, first):
        per_image.setdefault(c["image_id"], set()).add(c["annotator"])
    assert all(len(v) == 2 for v in per_image.values()) and len(per_image) == 5


def test_simulate_config_checks():
    with pytest.raises(ValueError, match="annotators_per_image"):
        SimulateConfig.from_dict(n_annotators=2, annotators_per_image=3)


def test_unknown_degradation_is_named():
    with pytest.raises(ValueError, match="'cup__x': degradation 'smudge'"):
        simulate_critique(make_image("cup__x", "smudge", 0.5), "sim-01", "p@1")


# --- statistics -----------------------------------------------------------------------------

def test_consensus_and_agreement():
    cs = [make_critique("a", "x", "good", 4), make_critique("a", "y", "excellent", 5),
          make_critique("a", "z", "fair", 3), make_critique("b", "x", "bad", 1),
          make_critique("b", "y", "bad", 1), make_critique("b", "z", "poor", 2)]
    rows = {r["image_id"]: r for r in consensus_rows(cs)}
    assert rows["a"]["consensus_grade"] == "good" and rows["a"]["consensus_level"] == "high"
    assert rows["a"]["mean_grade_score"] == 4.0 and rows["a"]["n_critiques"] == 3
    assert rows["b"]["consensus_grade"] == "bad" and rows["b"]["mean_grade_score"] == pytest.approx(1.3333)
    perfect = [make_critique(i, a, g, r) for i, g, r in (("a", "good", 4), ("b", "bad", 1), ("c", "fair", 3))
               for a in ("x", "y")]
    assert ordinal_alpha(perfect, lambda c: c.rating("composition")) == 1.0
    reversed_ = [make_critique("a", "x", rating=1), make_critique("a", "y", rating=5),
                 make_critique("b", "x", rating=5), make_critique("b", "y", rating=1)]
    assert ordinal_alpha(reversed_, lambda c: c.rating("composition")) < 0
    single = [make_critique("a", "x"), make_critique("b", "x")]
    assert ordinal_alpha(single, lambda c: c.rating("composition")) is None


def test_stats_have_the_contract_keys():
    cs = simulate_critiques([make_image(f"cup__{k}", k, 0.75) for k in DEGRADATIONS], "p@1",
                            SimulateConfig(n_annotators=4, annotators_per_image=3))
    s = compute_stats(cs)
    for key in ("grade_counts", "attribute_ratings", "description_lengths", "agreement",
                "characteristic_words", "n_images", "n_critiques", "n_annotators", "annotator_kind"):
        assert key in s
    assert s["annotator_kind"] == "simulated" and s["n_critiques"] == 30 and s["n_images"] == 10
    assert sum(s["grade_counts"].values()) == 30
    assert all(sum(v.values()) == 30 for v in s["attribute_ratings"].values())
    assert set(s["agreement"]) == {"grade", *ATTRIBUTES}
    words = dict(map(tuple, s["characteristic_words"]["technical_quality"]))
    low_words = {"blurry", "noisy", "flawed"}
    assert any(w in low_words and score > 0 for w, score in words.items())


def test_stats_figure_is_written_with_the_same_bytes_twice(tmp_path):
    import matplotlib.pyplot as plt

    cs = simulate_critiques([make_image(f"cup__{k}", k, 0.75) for k in DEGRADATIONS], "p@1",
                            SimulateConfig(n_annotators=4, annotators_per_image=3))
    s = compute_stats(cs)
    for name in ("a", "b"):
        plt.close(collect.plot_stats(s, tmp_path / name / "fig_collect_stats"))
    for ext in ("pdf", "png"):
        first, second = (tmp_path / n / f"fig_collect_stats.{ext}" for n in ("a", "b"))
        assert first.stat().st_size > 1000 and first.read_bytes() == second.read_bytes()


# --- importers ------------------------------------------------------------------------------

def test_pccd_import_handles_messy_rows():
    result = import_file(FIXTURES / "pccd_messy.json", "pccd", ImportOptions(source="pccd-test"))
    got = {c.image_id: c for c in result.critiques}
    # image ids come from the image URLs (titles can repeat)
    assert sorted(got) == ["full_size_1", "full_size_2", "full_size_8", "img_3"]
    reasons = {r["row"]: r["reason"] for r in result.rejects}
    assert reasons == {3: "missing grade", 4: "unparsable score", 5: "empty text", 6: "unparsable score",
                       8: "score out of range", 9: "not a record"}
    assert result.summary()["skipped_by_reason"] == {"empty text": 1, "missing grade": 1, "not a record": 1,
                                                     "score out of range": 1, "unparsable score": 2}
    clean = got["full_size_1"]
    assert clean.grade == "excellent" and clean.annotator == "Rev One" and clean.annotator_kind == "imported"
    # technical quality = mean of use_of_camera (10), depth_of_field (9), focus (8) = 9 on 1-10
    assert {a: j["rating"] for a, j in clean.attributes.items()} == {
        "technical_quality": 5, "color_light": 3, "composition": 4, "content": 4}
    assert clean.extra["image"] == "http://example.org/upload/full_size_1.jpg"
    messy = got["full_size_2"]
    assert messy.grade == "fair" and "technical_quality" not in messy.attributes
    assert set(messy.extra["attribute_texts"]) == {"general_impression"}
    assert got["img_3"].grade == "good"
    assert got["full_size_8"].description == (
        "Subject: A harbour. Composition: Horizon is tilted. Colour and lighting: Colours are flat.")
    assert got["full_size_8"].grade == "poor"

    assert clean.extra["title"] == "1_clean-row"


def test_pccd_photos_with_the_same_title_stay_apart(tmp_path):
    row = {"title": "Untitled", "overall": "7", "general_impression": "Nice light.",
           "score": ["7"] * 7}
    path = tmp_path / "same_title.json"
    path.write_text(json.dumps([{**row, "image_url": "http://example.org/a.jpg"},
                                {**row, "image_url": "http://example.org/b.jpg"}]))
    result = import_file(path, "pccd", ImportOptions(source="pccd-test"))
    assert sorted(c.image_id for c in result.critiques) == ["a", "b"]


def test_image_paths_outside_the_folder_are_refused(tmp_path):
    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    assert resolve_image("sub/a.png", images) == ("sub/a", "sub/a.png")
    assert resolve_image(str(images / "b.jpg"), images) == ("b", "b.jpg")
    for bad in ("../secret.png", "/etc/passwd", "sub/../../x.png", "file:///etc/passwd"):
        with pytest.raises(RowError, match="outside the image folder"):
            resolve_image(bad, images)
    with pytest.raises(RowError, match="outside the image folder"):
        resolve_image("/abs/x.png", None)
    (images / "link.png").symlink_to(tmp_path / "elsewhere.png")   # a symlink leading out
    with pytest.raises(RowError, match="outside the image folder"):
        resolve_image("link.png", images)


def test_csv_import_with_column_mapping(tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for name in ("p1", "p6"):   # images are decoded at import: they must exist and be intact
        Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / "imgs" / f"{name}.png")
    path = tmp_path / "lab.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["photo", "overall", "comp", "comp_word", "comment", "who"])
        w.writerow(["p1.png", "Good", "4", "balanced", "A well balanced scene with soft light.", "ann"])
        w.writerow(["p2.png", "", "3", "", "No grade given here.", "bob"])
        w.writerow(["../p3.png", "fair", "3", "", "Path escapes the folder.", "bob"])
        w.writerow(["p4.png", "poor", "7", "", "Rating out of scale.", "bob"])
        w.writerow(["p5.png", "bad", "2", "", "   ", "bob"])
        w.writerow(["p6.png", "9", "", "", "Numeric grade on the 1-10 scale.", "cy"])
    opt = ImportOptions(source="lab", images_dir=tmp_path / "imgs",
                        columns={"image": "photo", "grade": "overall", "composition": "comp",
                                 "composition_word": "comp_word", "description": "comment", "annotator": "who"})
    result = import_file(path, "csv", opt)
    assert [c.image_id for c in result.critiques] == ["p1", "p6"]
    c = result.critiques[0]
    assert c.grade == "good" and c.attributes == {"composition": {"rating": 4, "word": "balanced"}}
    assert c.annotator == "ann" and result.critiques[1].grade == "excellent"
    assert [r["reason"] for r in result.rejects] == ["missing grade", "image path outside the image folder",
                                                     "score out of range", "empty text"]


def test_jsonl_and_scores_import(tmp_path):
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"image": "a.png", "grade": "fair", "description": "Plain but fine.", "vibe": "4"}\n'
                  "{not json\n"
                  '{"image": "b.png", "grade": "nice", "description": "Bad grade word."}\n')
    r = import_file(jl, "jsonl")
    assert [c.attributes for c in r.critiques] == [{"vibe": {"rating": 4, "word": None}}]
    assert [x["reason"] for x in r.rejects] == ["unparsable row", "unparsable score"]
    scores = tmp_path / "ava_test.json"
    scores.write_text(json.dumps([{"image": "1.jpg", "gt_score": 5.5}, {"image": "2.jpg", "gt_score": "9.4"},
                                  {"image": "3.jpg", "gt_score": None}, {"image": "4.jpg", "gt_score": "x"},
                                  {"image": "5.jpg", "gt_score": 1.2}]))
    r = import_file(scores, "scores", ImportOptions(require_text=False))
    assert [(c.image_id, c.grade) for c in r.critiques] == [("1", "fair"), ("2", "excellent"), ("5", "bad")]
    assert [x["reason"] for x in r.rejects] == ["missing grade", "unparsable score"]
    para = import_file(scores, "scores", ImportOptions(score_min=1, score_max=5, require_text=False))
    assert [x["reason"] for x in para.rejects] == ["score out of range", "score out of range",
                                                   "missing grade", "unparsable score"]
    assert [(c.image_id, c.grade) for c in para.critiques] == [("5", "bad")]


# --- pipeline and CLI ------------------------------------------------------------------------

def write_manifest(tmp_path: Path, images: list[ImageRecord]) -> Path:
    data = tmp_path / "data"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"name": "t", "version": 1,
                                                    "images": [i.to_dict() for i in images]}))
    return data


def test_cli_simulate_import_export_stats(tmp_path, capsys):
    imgs = [make_image(f"cup__{k}", k, 0.5 if k != "none" else 0.0) for k in DEGRADATIONS]
    data = write_manifest(tmp_path, imgs)
    out = tmp_path / "out"
    assert aes_main(["collect", "simulate", "--data", str(data), "--out", str(out), "--per-image", "2"]) == 0
    crit = out / "critiques"
    for name in ("critiques.db", "critiques.jsonl", "consensus.csv", "stats.json", "simulate_config.json"):
        assert (crit / name).stat().st_size > 0, name
    assert len(read_jsonl(crit / "critiques.jsonl", Critique)) == 20
    # re-simulating replaces the simulated critiques instead of doubling them
    assert aes_main(["collect", "simulate", "--data", str(data), "--out", str(out), "--per-image", "2"]) == 0
    assert aes_main(["collect", "import", str(FIXTURES / "pccd_messy.json"), "--format", "pccd",
                     "--out", str(out)]) == 0
    rejects = [json.loads(line) for line in (crit / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 6 and all(r["reason"] and "record" in r for r in rejects)
    summary = json.loads((crit / "import_summary.json").read_text())
    assert summary["skipped"] == 6 and summary["format"] == "pccd"
    assert summary["options"]["score_max"] == 10.0 and summary["options"]["source"] == "pccd:pccd_messy"
    critiques = read_jsonl(crit / "critiques.jsonl", Critique)
    assert len(critiques) == 24
    assert {c.annotator_kind for c in critiques} == {"simulated", "imported"}
    capsys.readouterr()
    assert aes_main(["collect", "stats", "--out", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["n_critiques"] == 24 and shown["annotator_kind"] == "mixed"
    with open(crit / "consensus.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 14 and rows[0].keys() >= {"image_id", "consensus_grade", "mean_vibe"}
    assert aes_main(["collect", "export", "--out", str(out), "--file", str(tmp_path / "x.jsonl")]) == 0
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 24


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    assert aes_main(["collect", "import", str(tmp_path / "missing.json"), "--format", "pccd",
                     "--out", str(tmp_path)]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err
    assert aes_main(["collect", "simulate", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "manifest.json: file not found" in capsys.readouterr().err
    assert aes_main(["collect", "stats", "--out", str(tmp_path / "empty")]) == 2
    assert "no critiques to aggregate" in capsys.readouterr().err
    (tmp_path / "header_only.csv").write_text("image,grade,description\n")
    assert aes_main(["collect", "import", str(tmp_path / "header_only.csv"), "--format", "csv",
                     "--out", str(tmp_path)]) == 2
    assert "header_only.csv: no rows to import" in capsys.readouterr().err
    assert aes_main(["collect", "export", "--out", str(tmp_path / "nothing")]) == 2
    assert "no critique store" in capsys.readouterr().err
    assert not (tmp_path / "nothing" / "critiques" / "critiques.jsonl").exists()


def test_simulation_on_the_built_dataset(mini_dataset, tmp_path):
    images = collect.load_manifest(mini_dataset.parent)
    n = collect.simulate_into_store(tmp_path, images, SimulateConfig(annotators_per_image=3))
    assert n == 3 * len(images)
    _, critiques = collect.export_jsonl(tmp_path)
    stats = collect.write_stats(tmp_path, critiques)
    assert stats["n_images"] == len(images) and stats["agreement"]["grade"] is not None
    by_kind = {}
    ids = {i.id: i for i in images}
    for c in critiques:
        by_kind.setdefault(ids[c.image_id].degradation, []).append(c.rating("technical_quality"))
    mean = {k: sum(v) / len(v) for k, v in by_kind.items()}
    assert mean["noise"] < mean["none"] and mean["blur"] < mean["none"]


def test_pccd_uses_downloaded_images_in_the_image_folder(tmp_path):
    from PIL import Image

    Image.new("RGB", (16, 16), (200, 90, 40)).save(tmp_path / "full_size_1.jpg")
    result = import_file(FIXTURES / "pccd_messy.json", "pccd", ImportOptions(images_dir=tmp_path))
    images = {c.image_id: c.extra["image"] for c in result.critiques}
    assert images["full_size_1"] == "full_size_1.jpg"
    assert images["img_3"] == "http://example.org/upload/img_3.jpg"
