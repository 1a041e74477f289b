"""The reader's figure check (aes_lib.report.figcheck) and the figures it guards: readable text at
the saved DPI, no text on text, no legend entry without data. The smoke chain runs it on every
figure a run writes (AES_FIGURE_CHECK=strict in tests/test_smoke_chain.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from aes_lib.report import figures as F
from aes_lib.report.figcheck import check_figure
from aes_lib.report.reference import BENCH_COLUMNS, load_reference, reported_scores


def _fig(w=4.0, h=3.0):
    return F._figure(w, h)


def test_a_clean_figure_passes():
    fig, axes = _fig()
    axes[0, 0].plot([0, 1, 2], [1, 3, 2], label="a")
    axes[0, 0].legend()
    axes[0, 0].set_title("fine")
    assert check_figure(fig) == []


def test_text_too_small_at_the_saved_dpi():
    fig, axes = _fig()
    axes[0, 0].set_xlabel("tiny", fontsize=6)
    assert check_figure(fig, dpi=150) == []            # 6 pt at 150 dpi: 12.5 px
    problems = check_figure(fig, dpi=100)               # 8.3 px
    assert len(problems) == 1 and "'tiny' is 6 pt = 8.3 px at 100 dpi" in problems[0]


def test_tick_labels_on_top_of_each_other():
    fig, axes = _fig(4.0, 1.5)
    names = [f"debian:/usr/share/backgrounds/photo_{i}.jpg" for i in range(30)]
    axes[0, 0].barh(range(30), [1] * 30)
    axes[0, 0].set_yticks(range(30), names)
    problems = check_figure(fig)
    assert problems and all("overlap" in p for p in problems)


def test_tilted_labels_that_do_not_touch_pass_and_those_that_do_fail():
    fig, axes = _fig(6.0, 3.0)
    axes[0, 0].bar(range(4), [1, 2, 3, 4])
    axes[0, 0].set_xticks(range(4), ["Technical Quality", "Color & Light", "Composition", "Content"],
                          rotation=30, ha="right", rotation_mode="anchor")
    assert check_figure(fig) == []   # their boxes overlap, the turned text does not
    fig, axes = _fig(2.0, 3.0)
    axes[0, 0].bar(range(4), [1, 2, 3, 4])
    axes[0, 0].set_xticks(range(4), ["a very long label one", "a very long label two",
                                     "a very long label three", "x"], rotation=10)
    assert any("overlap" in p for p in check_figure(fig))


def test_legend_entries_need_data():
    fig, axes = _fig()
    ax = axes[0, 0]
    ax.plot([0, 1], [1, 2], label="drawn")
    ax.plot([0, 1], [np.nan, np.nan], label="all missing")
    ax.bar([0, 1], [0, 0], label="no height")
    ax.legend()
    assert sorted(check_figure(fig)) == ["legend entry 'all missing' has no data drawn",
                                         "legend entry 'no height' has no data drawn"]


def test_save_figure_runs_the_check_when_asked(tmp_path, monkeypatch, caplog):
    fig, axes = _fig()
    axes[0, 0].set_title("small", fontsize=3)
    F.save_figure(fig, tmp_path, "quiet")               # not asked: written, nothing said
    assert (tmp_path / "quiet.png").exists()
    monkeypatch.setenv("AES_FIGURE_CHECK", "warn")
    F.save_figure(fig, tmp_path, "warned")
    assert "warned.png: text 'small' is 3 pt" in caplog.text
    monkeypatch.setenv("AES_FIGURE_CHECK", "strict")
    with pytest.raises(ValueError, match=r"strict\.png: figure check: text 'small'"):
        F.save_figure(fig, tmp_path, "strict")


# --- the figures a reader met -----------------------------------------------------------------

def _images(n_photos=69):
    packages = ["opencv-doc", "scikit-image", "lomiri-wallpapers-16.04", "mate-backgrounds"]
    out = []
    for p in range(n_photos):
        for d in ("none", "blur", "noise", "tilted"):
            out.append({"source_photo": f"photo{p}", "split": ("train", "val", "test")[p % 3],
                        "degradation": d, "category": "scene", "source_package": packages[p % 4],
                        "source_name": f"debian:/usr/share/backgrounds/{packages[p % 4]}/Photo {p}.jpg"})
    return out


def test_dataset_composition_of_69_photos_is_readable():
    fig = F.fig_dataset_composition(_images())
    assert check_figure(fig) == []
    ax = fig.axes[0]
    assert sum(p.get_width() for p in ax.patches) == 69
    assert not any("/" in t.get_text() for t in ax.get_yticklabels())


MEASURED = {"base": {"AesP": 31.1, "AesE": 34.7, "AesA": 30.5, "AesI_relevance": 0.23,
                     "AesI_precision": 0.09, "AesI_completeness": 0.02, "AesI_overall": 0.11},
            "finetuned": {"AesP": 32.1, "AesE": 33.6, "AesA": 38.3, "AesI_relevance": 0.64,
                          "AesI_precision": 0.21, "AesI_completeness": 0.04, "AesI_overall": 0.30},
            "base-generate": {"AesP": 0.0, "AesE": 0.0, "AesA": 0.0},
            "finetuned-generate": {"AesP": 32.1, "AesE": 33.6, "AesA": 38.3},
            "blind-prior": {"AesP": 40.0, "AesE": 51.4, "AesA": 57.0, "AesI_relevance": 0.01,
                            "AesI_precision": 0.01, "AesI_completeness": 0.01, "AesI_overall": 0.01},
            "finetuned:shuffled-images": {"AesP": 32.5, "AesE": 33.1, "AesA": 38.3, "AesI_relevance": 0.645,
                                          "AesI_precision": 0.21, "AesI_completeness": 0.037,
                                          "AesI_overall": 0.298}}


def test_radar_keeps_coinciding_and_zero_series_visible_and_says_so():
    fig = F.fig_radar_aesbench(reported_scores(load_reference()), MEASURED, BENCH_COLUMNS,
                               "reported by AesBench", judge="proxy-overlap")
    assert check_figure(fig) == []
    ax = [a for a in fig.axes if a.name == "polar"][1]
    lines = {line.get_label(): line for line in ax.lines}
    assert "finetuned-generate (= finetuned)" in lines
    assert "finetuned:shuffled-images (= finetuned)" in lines
    assert "base-generate (0 on every axis: at the centre)" in lines
    # a line drawn over another is thinner, with a smaller marker of another shape
    under, over = lines["finetuned"], lines["finetuned-generate (= finetuned)"]
    assert under.get_linewidth() > over.get_linewidth() and under.get_markersize() > over.get_markersize()
    assert under.get_marker() != over.get_marker() and under.get_zorder() < over.get_zorder()
    assert "lies on" in fig.get_supxlabel()
    # round rings, labelled above the lines: blind-prior's 0.57 -> 20, 40, 60 %
    assert [t.get_text() for t in ax.texts] == ["20%", "40%", "60%"]
    assert all(t.get_zorder() > max(line.get_zorder() for line in ax.lines) for t in ax.texts)


def _results():
    rows = []
    sources = ["lomiri-wallpapers-16.04", "mate-backgrounds", "opencv-doc", "plasma-workspace-wallpapers",
               "scikit-learn"]
    models = ["base", "finetuned", "base-generate", "finetuned-generate", "blind-prior",
              "base:shuffled-images", "finetuned:shuffled-images"]
    for i, m in enumerate(models):
        for s in sources:
            acc = 0.0 if m == "base-generate" else 0.3 + 0.05 * i
            for dim in ("AesP", "AesE", "AesA"):
                rows.append((m, dim, "source", s, "accuracy", acc, max(0, acc - 0.1), acc + 0.1, 40))
            if "generate" not in m:
                v = 0.01 if m == "blind-prior" else 0.1 + 0.03 * i
                rows.append((m, "AesI", "source", s, "overall[proxy-overlap]", v, v - 0.02, v + 0.02, 40))
    return pd.DataFrame(rows, columns=["model", "dimension", "group_by", "group", "metric", "value",
                                       "ci_low", "ci_high", "n"])


def test_bars_of_7_models_and_5_sources_are_readable_and_mark_zeros():
    fig = F.fig_bars(_results(), "source", "proxy-overlap")
    assert check_figure(fig) == []
    aesi = next(ax for ax in fig.axes if ax.get_title() == "AesI")
    assert aesi.get_ylim()[1] < 0.5 and "axis cut at" in aesi.get_ylabel()
    aesp = next(ax for ax in fig.axes if ax.get_title() == "AesP")
    zero_marks = [line for line in aesp.lines if line.get_marker() == "x"]
    assert len(zero_marks) == 1 and len(zero_marks[0].get_xdata()) == 5   # base-generate, each source
    assert zero_marks[0].get_label() == "base-generate"     # what its legend entry stands for
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend.count("base-generate") == 1
    assert "value of 0" in fig.get_supxlabel()
    assert not any("\n" not in t.get_text() and len(t.get_text()) > 16 for t in aesp.get_xticklabels())


def test_loss_title_quotes_the_mean_of_the_last_steps():
    steps = list(range(1, 401))
    loss = [2.0 + math.sin(s) for s in steps]
    loss[-1] = 2.65
    fig = F.fig_loss_curve(pd.DataFrame({"step": steps, "loss": loss}))
    mean = sum(loss[-20:]) / 20
    assert f"mean of the last 20 steps: {mean:.3f}" in fig.axes[0].get_title()
    assert "2.65" not in fig.axes[0].get_title()
    assert check_figure(fig) == []


def test_contact_sheet_labels_are_readable(tmp_path, monkeypatch):
    from aes_lib.data import DataConfig, build_dataset, contact_sheet, load_manifest

    manifest = build_dataset(DataConfig.from_dict(out=str(tmp_path / "data"), photos=["astronaut", "coffee"],
                                                  max_side=64, photo_set="mini"))
    monkeypatch.setenv("AES_FIGURE_CHECK", "strict")
    paths = contact_sheet(load_manifest(manifest), tmp_path / "sheet")
    assert all(p.exists() for p in paths)
