"""Labels survive every stage: one simulated critique, followed to the main results table."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

pytest.importorskip("matplotlib")


def test_a_simulated_critique_is_labelled_simulated_up_to_the_table(tmp_path):
    from aes_lib.evaluate import EvalConfig, build_bench, evaluate_prior, read_benchmark
    from aes_lib.generate import GenerateConfig, generate
    from aes_lib.io import write_json
    from aes_lib.report.build import SPECS, Report, ReportConfig
    from test_evaluate_model import _outputs, _png

    files = [_png(tmp_path / "src" / f"images/im{i}.png", i).relative_to(tmp_path / "src").as_posix()
             for i in range(4)]
    out = _outputs(tmp_path, files)   # critiques c00..c31, every one annotator_kind "simulated"
    for f in files:
        (out / "data" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "src" / f, out / "data" / f)
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    for rec in manifest["images"]:
        rec["split"] = "train" if rec["id"] == "im3" else "test"
    write_json(out / "data" / "manifest.json", manifest)

    # generate: the instructions made from critique c30 (image im3, train) carry its kind
    generate(GenerateConfig(), out, progress=False)
    llava = json.loads((out / "instructions" / "llava_train.json").read_text())
    messages = [json.loads(line) for line in (out / "instructions" / "messages_train.jsonl").open()]
    from_c30 = [r for r in llava if "c30" in r["id"]]
    assert from_c30 and all(r["annotator_kind"] == "simulated" for r in from_c30)
    assert {m["annotator_kind"] for m in messages} == {"simulated"}
    # the image paths stay relative to data/, folder included, so training finds every image
    assert all(r["image"].startswith("images/") and (out / "data" / r["image"]).is_file() for r in llava)
    assert all((out / "data" / m["images"][0]).is_file() for m in messages)

    # evaluate: the benchmark's critique-based items, predictions, results.csv and results JSON
    build_bench(out)
    items = read_benchmark(out / "eval" / "benchmark.jsonl")
    aesi = next(it for it in items if it.id == "im0:AesI")
    assert "subject 0" in aesi.reference and aesi.annotator_kind == "simulated"
    summary = evaluate_prior(EvalConfig.from_dict(out_dir=str(out), progress=False, n_boot=20))
    assert summary["annotator_kinds"]["simulated"] > 0
    saved = json.loads((out / "eval" / "results_blind-prior.json").read_text())
    assert saved["annotator_kinds"] == summary["annotator_kinds"]
    preds = [json.loads(line) for line in (out / "eval" / "predictions_blind-prior.jsonl").open()]
    assert next(p for p in preds if p["id"] == "im0:AesI")["annotator_kind"] == "simulated"
    rows = list(csv.DictReader((out / "eval" / "results.csv").open()))
    aesi_rows = [r for r in rows if r["dimension"] == "AesI" and r["group_by"] == "all"]
    assert aesi_rows and {r["annotator_kind"] for r in aesi_rows} == {"simulated"}
    # a group of recorded-ground-truth items only (a defect "why" question) says so by an empty kind
    assert any(r["annotator_kind"] == "" for r in rows if r["group"] == "why")

    # report: the main results table and the figures say "simulated"
    rep = Report(ReportConfig.from_dict(out_dir=str(out)))
    table = rep.build("table_main_results").table
    prior_row = next(r for r in table.rows if r[1] == "blind-prior")
    assert "from simulated critiques" in prior_row[2]
    # the prior gives every image the same AesI critique: flagged in the table's notes
    assert any(n.startswith("blind-prior: the same AesI answer for 3 of 3 items") for n in table.notes)
    for name in ("fig_bars_attribute", "fig_radar_aesbench"):
        assert "simulated critiques" in SPECS[name].make(rep).get_supxlabel(), name
