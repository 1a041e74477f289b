"""Tests of the report stage (aes_lib.report): figures, tables, determinism, gallery, CLI."""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
pd = pytest.importorskip("pandas")

from aes_lib.report import figures as F  # noqa: E402
from aes_lib.report import tables as T  # noqa: E402
from aes_lib.report.build import SPECS, Report, ReportConfig, build_report  # noqa: E402
from aes_lib.report.gallery import broken_links, gallery_links  # noqa: E402
from aes_lib.report.loaders import INPUT_FILES, load_inputs, split_metric  # noqa: E402
from aes_lib.report.reference import BENCH_COLUMNS, load_reference, reported_scores  # noqa: E402
from aes_lib.schema import ATTRIBUTES, GRADES  # noqa: E402

# --- small fixed inputs ---------------------------------------------------------------------

IMAGES = [
    {"id": f"{src}__{deg}", "file": f"images/{src}__{deg}.png", "source_photo": src,
     "source_name": src, "split": split, "degradation": deg, "strength": 0.0 if deg == "none" else 0.5,
     "category": cat}
    for src, split, cat in (("coffee", "train", "object"), ("astronaut", "val", "portrait"),
                            ("chelsea", "test", "animal"))
    for deg in ("none", "blur", "noise")
]
GRADE_COUNTS = {"excellent": 2, "good": 5, "fair": 7, "poor": 3, "bad": 1}
ATTR_RATINGS = {a: {"1": 1, "2": 2, "3": 5, "4": 3, "5": i % 3} for i, a in enumerate(ATTRIBUTES)}
CRITIQUE_STATS = {
    "grade_counts": GRADE_COUNTS, "attribute_ratings": ATTR_RATINGS,
    "description_lengths": [12, 15, 18, 18, 22, 30, 9, 14, 16, 25, 27, 11, 13, 19, 20, 21, 23, 17],
    "agreement": {"grade": 0.71, **{a: 0.4 + 0.05 * i for i, a in enumerate(ATTRIBUTES)}, "vibe": None},
    "characteristic_words": {a: [[f"{a[:4]}{k}", round(1.0 - 0.1 * k, 2)] for k in range(6)]
                             for a in ATTRIBUTES},
    "n_images": 9, "n_critiques": 18, "n_annotators": 3, "annotator_kind": "simulated",
}
CONSENSUS = pd.DataFrame({"image_id": [im["id"] for im in IMAGES], "n_critiques": [2] * 9,
                          "consensus_grade": ["good", "fair", "poor"] * 3,
                          "consensus_level": ["high", "medium", "low"] * 3,
                          "mean_grade_score": [4.0, 3.0, 2.0] * 3})
INSTRUCTION_STATS = {
    "counts_by_type": {"perception_mcq": 40, "empathy_mcq": 30, "level_mcq": 10, "description": 9},
    "counts_by_qtype": {"yes-no": 20, "what": 25, "how": 15, "why": 10, "level": 10, "open": 9},
    "counts_by_split": {"train": 60, "val": 15, "test": 14},
    "question_lengths": {"perception_mcq": [12, 14, 15, 11], "description": [8, 9, 10]},
    "answer_lengths": {"perception_mcq": [1, 1, 2, 1], "description": [40, 55, 61]},
    "n_rejected": 2, "prompt_version": "test",
}
LOSS = pd.DataFrame({"step": list(range(1, 21)), "loss": [6.0 * 0.85 ** s for s in range(20)],
                     "lr": [2e-3 * min(1, s / 3) for s in range(1, 21)], "tokens": [100] * 20,
                     "seconds": [0.05] * 20})


def _results() -> "pd.DataFrame":
    rows = []
    acc = {"base": 0.4, "finetuned": 0.7}
    for model, a in acc.items():
        for dim in ("AesP", "AesE", "AesA"):
            rows.append((model, dim, "all", "all", "accuracy", a, a - 0.1, a + 0.1, 50))
        for metric, v in (("relevance", 1.2), ("precision", 0.8), ("completeness", 0.9), ("overall", 1.0)):
            rows.append((model, "AesI", "all", "all", f"{metric}[proxy-overlap]", v * a / 0.7,
                         v * a / 0.7 - 0.2, v * a / 0.7 + 0.2, 20))
        for attr in ATTRIBUTES:
            dim = "AesP" if attr in ATTRIBUTES[:4] else "AesE"
            rows.append((model, dim, "attribute", attr, "accuracy", a, a - 0.15, min(1, a + 0.15), 12))
        for q in ("yes-no", "what", "how", "why"):
            rows.append((model, "AesP", "qtype", q, "accuracy", a - 0.05, a - 0.2, a + 0.1, 10))
        for s in ("NIs", "AIs"):
            rows.append((model, "AesA", "source", s, "accuracy", a, float("nan"), float("nan"), 5))
            rows.append((model, "AesI", "source", s, "overall[proxy-overlap]", 1.0, 0.8, 1.2, 5))
    return pd.DataFrame(rows, columns=["model", "dimension", "group_by", "group", "metric", "value",
                                       "ci_low", "ci_high", "n"])


def write_outputs(out: Path, skip: tuple[str, ...] = ()) -> Path:
    """A complete (or, with ``skip``, partial) pipeline output folder in the contract's formats."""
    writers = {
        "manifest": lambda p: p.write_text(json.dumps({"name": "AesMMIT-mini", "version": 1,
                                                       "images": IMAGES})),
        "critique_stats": lambda p: p.write_text(json.dumps(CRITIQUE_STATS)),
        "consensus": lambda p: CONSENSUS.to_csv(p, index=False),
        "instruction_stats": lambda p: p.write_text(json.dumps(INSTRUCTION_STATS)),
        "loss": lambda p: LOSS.to_csv(p, index=False),
        "results": lambda p: _results().to_csv(p, index=False),
    }
    for name, rel in INPUT_FILES.items():
        if name not in skip:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            writers[name](out / rel)
    return out


# --- figure functions on fixed inputs --------------------------------------------------------

def test_dataset_composition_counts():
    fig = F.fig_dataset_composition(IMAGES)
    ax_src, ax_deg, ax_cat = fig.axes[:3]
    assert [t.get_text() for t in ax_deg.get_yticklabels()] == ["none", "blur", "noise"]
    assert [p.get_width() for p in ax_deg.patches] == [3, 3, 3]
    assert sorted(p.get_width() for p in ax_cat.patches) == [3, 3, 3]
    # source photos per package, stacked by split: each photo counted once, in its one split
    assert sum(p.get_width() for p in ax_src.patches) == len({im["source_photo"] for im in IMAGES})
    assert ax_src.get_title() == "source photos per package"
    assert "9 images from 3 source photos" in fig.get_suptitle()


def test_critique_grades_bars_and_simulated_label():
    fig = F.fig_critique_grades(GRADE_COUNTS, "simulated", {"good": 3, "fair": 3, "poor": 3})
    per_critique = [p.get_height() for p in fig.axes[0].patches]
    assert per_critique == [GRADE_COUNTS[g] for g in GRADES]
    assert [p.get_height() for p in fig.axes[1].patches] == [3, 3, 3]
    assert "simulated annotators, measured by this run" in fig.get_supxlabel()


def test_attribute_ratings_shares_sum_to_one():
    fig = F.fig_attribute_ratings(ATTR_RATINGS, "simulated")
    ax = fig.axes[0]
    n = len(ATTRIBUTES)
    widths = [p.get_width() for p in ax.patches]
    assert len(widths) == 5 * n
    for i in range(n):
        assert math.isclose(sum(widths[i::n]), 1.0, rel_tol=1e-9)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == f"Technical Quality (mean {32 / 11:.2f})"  # (1*1+2*2+3*5+4*3)/11


def test_description_lengths_histogram_counts_all():
    fig = F.fig_description_lengths(CRITIQUE_STATS["description_lengths"], "simulated")
    assert sum(p.get_height() for p in fig.axes[0].patches) == len(CRITIQUE_STATS["description_lengths"])
    assert "18 critiques" in fig.axes[0].get_title()


def test_characteristic_words_top_k():
    fig = F.fig_characteristic_words(CRITIQUE_STATS["characteristic_words"], "simulated", top_k=3)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == len(ATTRIBUTES)
    assert [t.get_text() for t in visible[0].get_yticklabels()] == ["tech0", "tech1", "tech2"]
    assert [round(p.get_width(), 2) for p in visible[0].patches] == [1.0, 0.9, 0.8]
    # both signs, as the collect stage writes them: low-rating words first, then high-rating ones
    fig = F.fig_characteristic_words({"composition": [["crooked", 1.2], ["tilted", 0.4],
                                                      ["balanced", -0.9], ["centred", -1.5]]},
                                     "simulated", top_k=1)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["crooked", "centred"]
    red, green = (p.get_facecolor() for p in ax.patches)
    assert red != green


def test_agreement_handles_missing_alpha():
    fig = F.fig_agreement(CRITIQUE_STATS["agreement"], "simulated")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "overall grade" and labels[-1] == "Vibe"
    bar_labels = [t.get_text() for t in ax.texts]
    assert bar_labels[0] == "0.71" and bar_labels[len(labels) - 1] == "n/a"


def test_instruction_figures():
    fig = F.fig_instruction_types(INSTRUCTION_STATS["counts_by_type"], INSTRUCTION_STATS["counts_by_qtype"])
    assert [p.get_width() for p in fig.axes[0].patches] == [40, 30, 10, 9]
    assert "89 in all" in fig.get_suptitle()
    fig = F.fig_instruction_lengths(INSTRUCTION_STATS["question_lengths"], INSTRUCTION_STATS["answer_lengths"])
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["perception (multiple choice)", "description"]


def test_loss_curve_smoothing():
    fig = F.fig_loss_curve(LOSS, smoothing=0.5)
    raw, smooth = fig.axes[0].lines[:2]
    assert list(raw.get_ydata()) == LOSS["loss"].tolist()
    y = LOSS["loss"].tolist()
    # debiased EMA: (0.25 y0 + 0.5 y1) / (1 - 0.5**2)
    assert smooth.get_ydata()[0] == y[0]
    assert math.isclose(smooth.get_ydata()[1], (0.25 * y[0] + 0.5 * y[1]) / 0.75)
    assert len(fig.axes) == 2  # loss and learning rate


def test_radar_keeps_reported_and_measured_apart():
    ref = load_reference()
    measured = T.measured_scores(_results(), "proxy-overlap")
    fig = F.fig_radar_aesbench(reported_scores(ref), measured, BENCH_COLUMNS, "reported by AesBench",
                               judge="proxy-overlap")
    polar = [ax for ax in fig.axes if ax.name == "polar"]
    assert len(polar) == 2   # reported and measured never share a radar
    rep_ax, meas_ax = polar
    rep_styles = {line.get_label(): (line.get_linestyle(), line.get_linewidth(), line.get_marker())
                  for line in rep_ax.lines}
    meas_styles = {line.get_label(): (line.get_linestyle(), line.get_linewidth(), line.get_marker())
                   for line in meas_ax.lines}
    meas_styles = {label.split(" (")[0]: v for label, v in meas_styles.items()}
    assert set(rep_styles) == set(reported_scores(ref)) and set(meas_styles) == set(measured)
    for model in reported_scores(ref):
        ls, lw, marker = rep_styles[model]
        assert ls == "--" and lw <= 1.0 and marker in ("None", "", None)
    for model in measured:
        ls, lw, marker = meas_styles[model]
        assert ls == "-" and lw >= 1.4 and marker not in ("None", "", None)
    assert len({m for _, _, m in meas_styles.values()}) == len(measured)   # a marker shape each
    assert rep_ax.get_title().startswith("Reported by AesBench")
    assert meas_ax.get_title().startswith("Measured by this run") and "proxy-overlap" in meas_ax.get_title()
    assert "not directly comparable" in fig.get_supxlabel()
    # values are shares of the full scale: GPT-4V's AesP 72.08 % -> 0.7208
    gpt = next(line for line in rep_ax.lines if line.get_label() == "GPT-4V")
    assert math.isclose(gpt.get_ydata()[0], 0.7208)
    # the measured panel has its own scale in round steps: finetuned's best share is 0.7, so its
    # rings are 20, 40, 60 and 80 %
    assert rep_ax.get_ylim() == (0, 1.0) and meas_ax.get_ylim() == (0, 0.8)
    assert [t.get_text() for t in meas_ax.texts] == ["20%", "40%", "60%", "80%"]


def test_radar_draws_a_missing_value_as_a_gap_not_a_zero():
    measured = {"gen": {"AesP": 50.0, "AesE": 40.0, "AesA": 30.0}}   # no AesI scores
    fig = F.fig_radar_aesbench(reported_scores(load_reference()), measured, BENCH_COLUMNS,
                               "reported by AesBench")
    meas_ax = [ax for ax in fig.axes if ax.name == "polar"][1]
    (line,) = meas_ax.lines
    y = list(line.get_ydata())
    assert y[:3] == [0.5, 0.4, 0.3] and all(math.isnan(v) for v in y[3:7])
    # no filled polygon pulls the missing axes to the centre
    assert not [p for p in meas_ax.patches if p.get_label() != "_nolegend_" or p.get_alpha() == 0.08]


def test_bars_with_confidence_intervals():
    fig = F.fig_bars(_results(), "attribute", "proxy-overlap")
    assert [ax.get_title() for ax in fig.axes[:2]] == ["AesP", "AesE"]
    ax = fig.axes[0]
    heights = sorted({round(p.get_height(), 6) for p in ax.patches})
    assert heights == [40.0, 70.0]
    assert len(ax.patches) == 2 * 4
    fig = F.fig_bars(_results(), "source", "proxy-overlap")
    assert [ax.get_title() for ax in fig.axes[:2]] == ["AesA", "AesI"]
    # AesI's axis ends above its data (the full 0-2 scale would flatten it) and says so
    top = fig.axes[1].get_ylim()[1]
    assert top <= 2 and ("axis cut at" in fig.axes[1].get_ylabel()) == (top < 2)


def test_split_metric():
    assert split_metric("overall[proxy-overlap]") == ("overall", "proxy-overlap")
    assert split_metric("accuracy") == ("accuracy", "")
    assert split_metric("overall[]") == ("overall", "")
    with pytest.raises(ValueError, match="NAME"):
        split_metric("bad metric!")


# --- tables -----------------------------------------------------------------------------------

def test_main_results_table_rows_and_formats(tmp_path):
    ref = load_reference()
    table = T.table_main_results(ref, T.measured_scores(_results(), "proxy-overlap"), "run-a",
                                 "proxy-overlap")
    kinds = [r[0] for r in table.rows]
    assert kinds == ["reported"] * 6 + ["measured"] * 2
    gpt = table.rows[0]
    assert gpt[1] == "GPT-4V" and gpt[3] == "72.08"
    assert gpt[2] == "reported by AesBench (AesBench README leaderboard, rev. 9367974, 2024-07-18)"
    ft = table.rows[-1]
    assert ft[1] == "finetuned" and ft[3] == "70.00"
    assert ft[2] == "measured by this run (run-a; AesI judge: proxy-overlap)"
    assert any("not a GPT judge" in n for n in table.notes)
    mcq_only = T.table_main_results(ref, {"gen": {"AesP": 50.0}}, "run-a", "proxy-overlap")
    assert mcq_only.rows[-1][2] == "measured by this run (run-a)"   # no AesI, so no judge named
    assert ft[-1] == "1.000"
    paths = T.write_table(table, tmp_path, "table_main_results")
    csv_text, md, tex = (p.read_text() for p in paths)
    assert csv_text.splitlines()[1].startswith("reported,GPT-4V,")
    assert md.splitlines()[1].startswith("|---|")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert tex.count(r"\midrule") == 2  # after the header and between reported and measured
    assert r"\begin{tabular}{lllrrrrrrr}" in tex  # text columns left, numbers right
    assert "\\%" in tex


def test_main_results_table_shows_controls_with_intervals():
    results = _results()
    prior = results[results["model"] == "base"].assign(model="blind-prior")
    shuffled = results[results["model"] == "finetuned"].assign(model="finetuned:shuffled-images")
    measured = T.measured_scores(pd.concat([prior, results, shuffled]), "proxy-overlap", intervals=True)
    table = T.table_main_results(load_reference(), measured, "run-a", "proxy-overlap")
    assert [(r[0], r[1]) for r in table.rows[6:]] == [
        ("measured", "base"), ("measured", "finetuned"), ("control", "blind-prior"),
        ("control", "finetuned:shuffled-images")]
    ft = table.rows[7]
    assert ft[3] == "70.00 [60.00, 80.00]" and ft[-1] == "1.000 [0.800, 1.200]"
    assert "blind answer prior" in table.rows[8][2] and "another item's image" in table.rows[9][2]
    assert any("value [95% bootstrap confidence interval" in n for n in table.notes)
    assert any("beats both" in n for n in table.notes)
    assert table.numeric()[3]   # a value with its interval is still a number column


def test_main_results_without_measured():
    table = T.table_main_results(load_reference(), None)
    assert all(r[0] == "reported" for r in table.rows)
    assert any("not found" in n for n in table.notes)


def test_dataset_stats_table():
    table = T.table_dataset_stats(load_reference(), IMAGES, CRITIQUE_STATS, INSTRUCTION_STATS)
    rows = {r[0]: r[1:] for r in table.rows}
    assert rows["images"] == ["21,904", "9"]  # as the paper writes it
    assert rows["critiques (feedbacks)"] == ["88K (human)", "18 (simulated)"]
    assert rows["annotators"] == ["n/a", "3 (simulated)"]
    assert rows["instructions"] == ["409K", "89"]
    assert rows["instructions: perception_mcq"] == ["n/a", "40"]
    assert rows["avg. answer length (words)"][1] == f"{(1 + 1 + 2 + 1 + 40 + 55 + 61) / 7:.1f}"
    partial = T.table_dataset_stats(load_reference(), None, None, None)
    assert {r[0]: r[2] for r in partial.rows}["images"] == "n/a"


def test_latex_escape():
    assert T.latex_escape("a_b & 50% #1") == r"a\_b \& 50\% \#1"


# --- determinism ------------------------------------------------------------------------------

def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_figures_are_byte_identical_across_renders(tmp_path):
    for i in (1, 2):
        F.save_figure(F.fig_radar_aesbench(reported_scores(load_reference()),
                                           T.measured_scores(_results(), "proxy-overlap"),
                                           BENCH_COLUMNS, "reported by AesBench"), tmp_path / str(i), "radar")
        F.save_figure(F.fig_loss_curve(LOSS), tmp_path / str(i), "loss")
    first, second = _hashes(tmp_path / "1"), _hashes(tmp_path / "2")
    assert set(first) == {"radar.pdf", "radar.png", "loss.pdf", "loss.png"}
    assert first == second
    pdf = (tmp_path / "1" / "radar.pdf").read_bytes()
    assert b"CreationDate" not in pdf and b"Matplotlib v" not in pdf
    png = (tmp_path / "1" / "radar.png").read_bytes()
    assert b"Software" not in png and b"Matplotlib" not in png


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A complete output folder, with an earlier notebook's executed copy and figure, reported once."""
    out = write_outputs(tmp_path_factory.mktemp("report") / "outputs")
    (out / "notebooks").mkdir()
    (out / "notebooks" / "00_dataset.ipynb").write_text("{}")
    (out / "figures").mkdir()
    (out / "figures" / "fig_contact_sheet.png").write_bytes(b"png from notebook 00")
    build_report(ReportConfig(out_dir=str(out), run_label="run"))
    return out


def test_whole_report_is_deterministic(built, tmp_path):
    out = write_outputs(tmp_path / "outputs")
    build_report(ReportConfig(out_dir=str(out), run_label="run"))
    assert _hashes(out / "tables") == _hashes(built / "tables")
    mine = _hashes(out / "figures")
    assert mine == {k: v for k, v in _hashes(built / "figures").items() if k in mine}
    assert len(mine) == 2 * sum(1 for s in SPECS.values() if s.kind == "figure")


# --- the whole stage: build, partial pipelines, gallery links ---------------------------------

def test_build_report_complete(built):
    out = built
    summary = json.loads((out / "report.json").read_text())
    assert summary["skipped"] == {}
    assert set(summary["figures"]) | set(summary["tables"]) == set(SPECS)
    for entry in list(summary["figures"].values()) + list(summary["tables"].values()):
        for rel, digest in entry["sha256"].items():
            assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
    assert summary["judge"] == "proxy-overlap"
    assert list(summary["other_figures"]) == ["fig_contact_sheet"]
    for page in ("index.html", "index.md"):
        links = gallery_links(out / page)
        assert "figures/fig_radar_aesbench.png" in links
        assert "tables/table_main_results.tex" in links
        assert "notebooks/00_dataset.ipynb" in links
        assert "figures/fig_contact_sheet.png" in links  # an earlier notebook's figure
        assert broken_links(out / page) == []
    html_text = (out / "index.html").read_text()
    assert html_text.count("<figure") == sum(1 for s in SPECS.values() if s.kind == "figure") + 1
    assert "not executed in this output folder yet" in html_text  # 01..05 have no copies
    assert '<tr class="measured"><td class="text">measured</td><td class="text">finetuned</td>' in html_text
    assert '<td class="num">70.00 [60.00, 80.00]</td>' in html_text
    anchors = [link[1:] for link in gallery_links(out / "index.html") if link.startswith("#")]
    assert sorted(anchors) == sorted(SPECS)
    assert all(f'id="{a}"' in html_text for a in anchors)


def test_broken_links_are_found(tmp_path):
    page = tmp_path / "index.md"
    (tmp_path / "a.png").write_bytes(b"x")
    page.write_text("![a](a.png) [b](missing.pdf) [c](https://example.org/x)\n")
    assert broken_links(page) == ["missing.pdf"]


def test_partial_pipeline_skips_with_notes(tmp_path, caplog):
    out = write_outputs(tmp_path / "outputs", skip=("results", "loss", "instruction_stats",
                                                    "critique_stats"))
    rep = build_report(ReportConfig(out_dir=str(out)))
    assert set(rep.skipped) == {"fig_bars_attribute", "fig_bars_qtype", "fig_bars_source",
                                "fig_loss_curve", "fig_instruction_types", "fig_instruction_lengths",
                                "fig_critique_grades", "fig_attribute_ratings", "fig_description_lengths",
                                "fig_characteristic_words", "fig_agreement"}
    assert "eval/results.csv" in rep.skipped["fig_bars_qtype"]
    assert any("skipped" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    html_text = (out / "index.html").read_text()
    assert "fig_loss_curve</strong>: needs train/run/loss.csv" in html_text
    assert (out / "figures" / "fig_radar_aesbench.png").exists()
    assert not (out / "figures" / "fig_loss_curve.png").exists()
    assert broken_links(out / "index.html") == []


def test_empty_output_folder_still_builds(tmp_path):
    rep = build_report(ReportConfig(out_dir=str(tmp_path)))
    assert set(rep.built) == {"fig_radar_aesbench", "table_main_results", "table_dataset_stats"}
    assert (tmp_path / "index.html").exists() and (tmp_path / "index.md").exists()


def test_stale_figures_of_skipped_items_are_removed(built, tmp_path):
    import shutil

    out = Path(shutil.copytree(built, tmp_path / "outputs"))
    assert (out / "figures" / "fig_loss_curve.pdf").exists()
    for name in ("loss", "results", "manifest"):
        (out / INPUT_FILES[name]).unlink()
    build_report(ReportConfig(out_dir=str(out)))
    assert not (out / "figures" / "fig_loss_curve.pdf").exists()
    assert not (out / "figures" / "fig_bars_qtype.png").exists()
    assert (out / "figures" / "fig_contact_sheet.png").exists()  # not the report's to remove


def test_malformed_input_is_an_error_naming_the_file(tmp_path):
    out = write_outputs(tmp_path / "outputs")
    (out / INPUT_FILES["loss"]).write_text("step,value\n1,2\n")
    with pytest.raises(ValueError, match=r"loss\.csv: column 'loss' missing"):
        load_inputs(out)
    (out / INPUT_FILES["loss"]).unlink()
    (out / INPUT_FILES["critique_stats"]).write_text(json.dumps({"grade_counts": {}}))
    with pytest.raises(ValueError, match=r"stats\.json: field 'attribute_ratings' missing"):
        load_inputs(out)


def test_unknown_judge_is_an_error(tmp_path):
    out = write_outputs(tmp_path / "outputs")
    with pytest.raises(ValueError, match="judge 'gpt-judge'.*proxy-overlap"):
        Report(ReportConfig(out_dir=str(out), judge="gpt-judge"))


def test_config_validation():
    from aes_lib.config import ConfigError

    with pytest.raises(ConfigError, match="top_words"):
        ReportConfig.from_dict({"top_words": 0})
    with pytest.raises(ConfigError, match="loss_smoothing"):
        ReportConfig.from_dict({"loss_smoothing": 1.0})


def test_cli_builds_report(tmp_path):
    from aes_lib.cli import main

    out = write_outputs(tmp_path / "outputs", skip=("loss", "manifest", "instruction_stats",
                                                    "critique_stats"))
    assert main(["report", "--out", str(out)]) == 0
    assert (out / "index.html").exists()
    assert "fig_loss_curve" in json.loads((out / "report.json").read_text())["skipped"]
    assert main(["report", "--out", str(out), "--judge", "nope"]) == 2


def test_random_inputs_never_crash(tmp_path):
    """Odd but valid inputs: empty lists, a single step, unknown extra categories."""
    from matplotlib.figure import Figure

    rng = random.Random(0)
    figs = [F.fig_description_lengths([], "human"),
            F.fig_loss_curve(LOSS.iloc[:1][["step", "loss"]]),
            F.fig_instruction_types({"custom_type": rng.randint(1, 9)}, {"open": 3}),
            F.fig_characteristic_words({"technical_quality": []}, "simulated"),
            F.fig_bars(_results().iloc[0:0], "qtype")]
    for fig in figs:   # each still a drawable figure that says where its numbers come from
        assert isinstance(fig, Figure) and fig.axes
        fig.savefig(io.BytesIO(), format="png")
    assert "human annotators" in figs[0].get_supxlabel()
    assert "simulated annotators" in figs[3].get_supxlabel()


@pytest.mark.slow
def test_notebook_05_runs_on_a_partial_pipeline(tmp_path):
    """Notebook 05 under papermill (cwd = repo root): skips what is missing, never crashes."""
    papermill = pytest.importorskip("papermill")
    root = Path(__file__).resolve().parents[1]
    out = write_outputs(tmp_path / "outputs", skip=("loss", "manifest"))
    executed = tmp_path / "05_figures.ipynb"
    papermill.execute_notebook(str(root / "notebooks" / "05_figures.ipynb"), str(executed),
                               parameters={"out_dir": str(out), "top_words": 3}, cwd=str(root),
                               kernel_name="python3", progress_bar=False)
    summary = json.loads((out / "report.json").read_text())
    assert set(summary["skipped"]) == {"fig_loss_curve", "fig_dataset_composition"}
    assert summary["config"]["top_words"] == 3
    assert (out / "figures" / "fig_radar_aesbench.pdf").exists()
    assert broken_links(out / "index.html") == []


def test_notebook_display_of_built_and_skipped_items(tmp_path):
    out = write_outputs(tmp_path / "outputs", skip=("loss",))
    rep = Report(ReportConfig(out_dir=str(out)))
    shown = rep.build("fig_agreement")._repr_html_()
    assert shown.startswith('<img src="data:image/png;base64,') and "simulated" in shown
    assert "<table>" in rep.build("table_main_results")._repr_html_()
    assert "skipped" in rep.build("fig_loss_curve")._repr_html_()
    with pytest.raises(ValueError, match="unknown report item 'fig_nope'"):
        rep.build("fig_nope")


def test_measured_scores_ignore_models_without_benchmark_rows():
    extra = pd.DataFrame([("scorer", "pccd", "all", "all", "srcc", 0.5, 0.4, 0.6, 30)],
                         columns=_results().columns)
    measured = T.measured_scores(pd.concat([_results(), extra]), "proxy-overlap")
    assert list(measured) == ["base", "finetuned"]
    assert measured["base"]["AesP"] == 40.0 and math.isclose(measured["base"]["AesI_overall"], 1.0 * 0.4 / 0.7)


def test_consensus_grades_skip_images_without_consensus(tmp_path):
    out = write_outputs(tmp_path / "outputs")
    consensus = CONSENSUS.copy()
    consensus.loc[0, "consensus_grade"] = None
    consensus.to_csv(out / INPUT_FILES["consensus"], index=False)
    from aes_lib.report.build import _consensus_counts

    counts = _consensus_counts(Report(ReportConfig(out_dir=str(out))))
    assert counts == {"good": 2, "fair": 3, "poor": 3}
