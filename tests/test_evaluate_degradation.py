"""The degradation items (AesP answered from recorded degradations): which they are, the paired
comparison of a model against base / shuffled images / blind prior on them, and the photo set
named beside every result."""

from __future__ import annotations

import json

import pytest

from aes_lib.evaluate import bench as B
from aes_lib.evaluate.controls import degradation_differences, is_degradation_item, photo_set_of
from aes_lib.io import write_json
from aes_lib.schema import write_jsonl
from test_evaluate_bench import _critiques, _records


def test_degradation_items_are_the_ground_truth_defect_questions_only():
    items = B.build_benchmark(_records(), _critiques(), seed=0)
    chosen = {it.id for it in items if is_degradation_item(it)}
    # im0 is blurred: its technical-quality yes-no / what / why; other attributes ask nothing
    assert {i for i in chosen if i.startswith("im0:")} == {
        "im0:AesP:technical_quality:yes-no", "im0:AesP:technical_quality:what",
        "im0:AesP:technical_quality:why"}
    # im1 has no defect: a yes-no and a what per attribute, no why
    assert {i for i in chosen if i.startswith("im1:")} == {
        f"im1:AesP:{a}:{q}" for a in ("technical_quality", "color_light", "composition")
        for q in ("yes-no", "what")}
    # ratings ("how"), traits (palette what-trait, content what) and other dimensions are not
    others = {it.id for it in items} - chosen
    assert "im0:AesP:composition:how" in others and "im0:AesP:color_light:what-trait" in others
    assert "im0:AesP:content:what" in others and not any(":AesP:" not in i for i in chosen)
    # prediction records (dicts with the same fields) are recognised the same way
    rec = {"id": "im0:AesP:technical_quality:why", "dimension": "AesP",
           "attribute": "technical_quality", "qtype": "why"}
    assert is_degradation_item(rec)
    assert not is_degradation_item({**rec, "id": "im0:AesP:technical_quality:how", "qtype": "how"})


def _pred(i, correct, attr="technical_quality", qtype="yes-no"):
    return {"id": f"im{i}:AesP:{attr}:{qtype}", "dimension": "AesP", "attribute": attr,
            "qtype": qtype, "correct": correct}


def test_degradation_differences_pair_items_and_ignore_other_questions():
    model = [_pred(i, True) for i in range(40)] + [_pred(i, False, "composition", "how") for i in range(40)]
    half = [_pred(i, i % 2 == 0) for i in range(40)] + [_pred(i, True, "composition", "how") for i in range(40)]
    same = [_pred(i, True) for i in range(40)]
    rows = degradation_differences({"ft": model, "prior": half, "twin": same}, "ft", ["prior", "twin"],
                                   n_boot=500, photo_set="full-69")
    by = {r["comparison"]: r for r in rows}
    prior, twin = by["ft - prior"], by["ft - twin"]
    assert prior["items"] == 40 and prior["model accuracy"] == 1.0 and prior["other accuracy"] == 0.5
    assert prior["difference"] == pytest.approx(0.5)
    assert 0 < prior["ci_low"] < 0.5 < prior["ci_high"] <= 1.0 and prior["interval excludes 0"]
    assert twin["difference"] == 0 and not twin["interval excludes 0"]
    assert {r["photo_set"] for r in rows} == {"full-69"}
    # only items both answered are paired
    rows = degradation_differences({"ft": model, "few": same[:10]}, "ft", ["few"], n_boot=50)
    assert rows[0]["items"] == 10
    with pytest.raises(ValueError, match="'none' answered no degradation item"):
        degradation_differences({"ft": model, "none": [_pred(1, True, "composition", "how")]}, "ft", ["none"])
    with pytest.raises(KeyError, match="missing"):
        degradation_differences({"ft": model}, "ft", ["missing"])


def test_degradation_comparison_reads_predictions_and_names_the_photo_set(tmp_path):
    from aes_lib.evaluate.tables import degradation_comparison

    out = tmp_path / "outputs"
    write_json(out / "data" / "manifest.json", {"name": "t", "version": 1, "photo_set": "mini-16", "images": []})
    preds = {"finetuned": [_pred(i, i < 30) for i in range(40)],
             "base": [_pred(i, i < 10) for i in range(40)],
             "finetuned_shuffled-images": [_pred(i, i < 12) for i in range(40)],
             "blind-prior": [_pred(i, i >= 20) for i in range(40)]}
    for name, ps in preds.items():
        write_jsonl(out / "eval" / f"predictions_{name}.jsonl", ps)
    df = degradation_comparison(out, "finetuned", n_boot=200)
    assert list(df["comparison"]) == ["finetuned - base", "finetuned - finetuned:shuffled-images",
                                      "finetuned - blind-prior"]
    assert list(df["difference"]) == pytest.approx([0.5, 0.45, 0.25])
    assert set(df["photo_set"]) == {"mini-16"}
    with pytest.raises(FileNotFoundError, match="no predictions for model 'other'"):
        degradation_comparison(out, "finetuned", against=["other"])


def test_photo_set_of_reads_the_manifest_and_results_carry_it(tmp_path):
    from aes_lib.evaluate import EvalConfig, build_bench
    from aes_lib.evaluate.controls import evaluate_prior
    from test_evaluate_model import _outputs

    assert photo_set_of(tmp_path) == ""   # no manifest: unknown
    out = _outputs(tmp_path, [f"images/im{i}.png" for i in range(4)])
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    manifest["photo_set"] = "full-69"
    for rec in manifest["images"][2:]:
        rec["split"] = "train"
    write_json(out / "data" / "manifest.json", manifest)
    assert photo_set_of(out) == "full-69"
    build_bench(out)
    evaluate_prior(EvalConfig.from_dict(out_dir=str(out), progress=False, n_boot=20))
    assert json.loads((out / "eval" / "results_blind-prior.json").read_text())["photo_set"] == "full-69"
    # results on another benchmark (AesBench's layout, a score dataset) are not labelled with it
    from aes_lib.evaluate.run import _save

    _save(EvalConfig.from_dict(out_dir=str(out), progress=False), "other", [], {"format": "aesbench", "rows": []})
    assert "photo_set" not in json.loads((out / "eval" / "results_other.json").read_text())
    (out / "data" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json: not valid JSON"):
        photo_set_of(out)


def test_main_results_table_names_the_photo_set(tmp_path):
    from aes_lib.report import tables as T
    from aes_lib.report.build import ReportConfig, build_report
    from aes_lib.report.reference import load_reference

    table = T.table_main_results(load_reference(), {"finetuned": {"AesP": 50.0}}, "run-a", photo_set="full-69")
    measured = [r for r in table.rows if r[0] == "measured"]
    assert measured and "photo set full-69" in measured[0][2]
    assert any("photo set full-69: never compare" in n for n in table.notes)
    unnamed = T.table_main_results(load_reference(), {"finetuned": {"AesP": 50.0}}, "run-a")
    assert not any("photo set" in r[2] for r in unnamed.rows) and not any("photo set" in n for n in unnamed.notes)
    # the report reads each model's photo set from its results file: a model scored on another
    # benchmark (no photo set recorded) is not labelled with the manifest's
    from test_report import _results

    write_json(tmp_path / "data" / "manifest.json", {"name": "t", "version": 1, "photo_set": "full-69", "images": []})
    (tmp_path / "eval").mkdir()
    _results().to_csv(tmp_path / "eval" / "results.csv", index=False)
    write_json(tmp_path / "eval" / "results_finetuned.json", {"model": "finetuned", "photo_set": "mini-16"})
    write_json(tmp_path / "eval" / "results_base.json", {"model": "base", "format": "aesbench"})
    build_report(ReportConfig(out_dir=str(tmp_path)))
    rows = {r[1]: r[2] for r in (l.split(" | ") for l in
            (tmp_path / "tables" / "table_main_results.md").read_text().splitlines()) if len(r) > 2}
    assert "photo set mini-16" in rows["finetuned"] and "photo set" not in rows["base"]
    assert "full-69" not in (tmp_path / "tables" / "table_main_results.md").read_text()
    mixed = T.table_main_results(load_reference(), {"a": {"AesP": 1.0}, "b": {"AesP": 2.0}}, "run",
                                 photo_set={"a": "full-69", "b": "mini-16"})
    assert any("full-69 and mini-16" in n and "mixes photo sets" in n for n in mixed.notes)
