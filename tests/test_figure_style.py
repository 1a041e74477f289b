"""Figures a reader understands: stable model colours, readable labels, no empty legend entries,
gallery figures that open at full size (issue #12)."""

from __future__ import annotations

import matplotlib.colors as mcolors
import pandas as pd

from aes_lib.report import figures as F
from aes_lib.report.gallery import render_html
from aes_lib.style import MODEL_COLORS, model_color, readable


def results(models: list[str]) -> pd.DataFrame:
    rows = []
    for i, model in enumerate(models):
        for q in ("yes-no", "what"):
            rows.append((model, "AesP", "qtype", q, "accuracy", 0.3 + 0.1 * i, 0.2, 0.6, 10))
    return pd.DataFrame(rows, columns=["model", "dimension", "group_by", "group", "metric", "value",
                                       "ci_low", "ci_high", "n"])


def bar_colours(fig) -> dict[str, str]:
    ax = fig.axes[0]
    return {label: mcolors.to_hex(handle.patches[0].get_facecolor())
            for handle, label in zip(*ax.get_legend_handles_labels())}


def test_a_model_keeps_its_colour_whatever_the_order():
    one = bar_colours(F.fig_bars(results(["base", "finetuned"]), "qtype"))
    two = bar_colours(F.fig_bars(results(["finetuned", "extra-model", "base"]), "qtype"))
    assert one["base"] == two["base"] == MODEL_COLORS["base"]
    assert one["finetuned"] == two["finetuned"] == MODEL_COLORS["finetuned"]
    assert model_color("base (cpu profile)") == model_color("base-scores") == MODEL_COLORS["base"]
    assert model_color("gpt-4o") == model_color("gpt-4o") and model_color("gpt-4o") not in MODEL_COLORS.values()


def test_a_model_without_results_gets_no_bars_and_no_legend_entry():
    frame = results(["base", "finetuned"])
    frame.loc[frame.model == "finetuned", "value"] = float("nan")
    fig = F.fig_bars(frame, "qtype")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["base"]
    assert len(fig.axes[0].patches) == 2


def test_empty_split_and_empty_radar_series_have_no_legend_entry():
    images = [{"source_photo": "grace_hopper", "split": "train", "degradation": d, "category": "portrait"}
              for d in ("none", "bad_crop")]
    fig = F.fig_dataset_composition(images)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["unknown package"]
    assert "bad crop" in [t.get_text() for t in fig.axes[1].get_yticklabels()]
    columns = {"AesP": ("AesP", 100.0), "AesE": ("AesE", 100.0), "AesA": ("AesA", 100.0)}
    fig = F.fig_radar_aesbench({"A": {"AesP": 50.0}, "B": {}}, {"base": {"AesP": 40.0}, "finetuned": {}},
                               columns, "reported by X")
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    labels = [t.get_text() for legend in legends for t in legend.get_texts()]
    assert labels == ["A", "base"]


def test_labels_read_without_snake_case():
    assert readable("perception_mcq") == "perception (multiple choice)"
    assert readable("color_cast") == "colour cast" and readable("some_new_key") == "some new key"


def test_gallery_figures_open_at_full_size(tmp_path):
    report = {"figures": {"fig_bars_source": {"caption": "Bars.", "files": ["figures/fig_bars_source.pdf",
                                                                             "figures/fig_bars_source.png"]}}}
    page = render_html(tmp_path, report)
    assert ('<a href="figures/fig_bars_source.png" title="open at full size">'
            '<img src="figures/fig_bars_source.png"') in page
