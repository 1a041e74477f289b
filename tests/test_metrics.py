"""Tests that notice a broken metric: each pins one definition to a value that a plausible
wrong implementation (Kendall for Spearman, nominal for ordinal alpha, half-to-even rounding,
moved thresholds, unpaired resampling, a missing resume guard) would not give."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from aes_lib.evaluate.bench import _rating_band
from aes_lib.evaluate.score import paired_difference
from aes_lib.evaluate.stats import srcc
from aes_lib.schema import consensus_grade


def test_srcc_is_spearman_not_kendall():
    # rank differences 1,1,1,1,0: Spearman 1 - 6*4/(5*24) = 0.8; Kendall's tau would be 0.6
    assert srcc([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)


def test_consensus_grade_rounds_half_up():
    # mean grade scores 2.5 and 4.5: half up gives fair and excellent (half to even: poor, good)
    assert consensus_grade(["fair", "poor"]) == "fair"
    assert consensus_grade(["excellent", "good"]) == "excellent"
    assert consensus_grade(["good", "poor", "poor"]) == "fair"    # 2.67
    assert consensus_grade(["good", "good", "poor", "poor"]) == "fair"   # 3.0


@pytest.mark.parametrize("mean, band", [
    (5.0, "good"), (3.67, "good"), (3.66, None), (3.5, None), (3.34, None), (3.33, "fair"),
    (3.0, "fair"), (2.67, "fair"), (2.66, None), (2.5, None), (2.34, None), (2.33, "poor"), (1.0, "poor")])
def test_rating_bands_and_their_gaps(mean, band):
    """docs/evaluate.md: good >= 3.67, fair 2.67-3.33, poor <= 2.33; near a border, no question."""
    assert _rating_band(mean, ["good", "fair", "poor"]) == band


def test_agreement_is_krippendorff_ordinal_alpha():
    from aes_lib.collect.stats import ordinal_alpha

    def alpha(rows):
        crits = [SimpleNamespace(annotator=f"a{k}", image_id=f"im{i}", v=v)
                 for i, row in enumerate(rows) for k, v in enumerate(row)]
        return ordinal_alpha(crits, lambda c: c.v)

    agree = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (1, 1), (5, 5)]
    near = alpha(agree + [(2, 3), (4, 3)])     # two disagreements by one step
    far = alpha(agree + [(2, 5), (4, 1)])      # two disagreements across the scale
    # ordinal alpha weighs a one-step miss lightly; nominal alpha would count both the same
    assert near > far + 0.2
    import krippendorff

    data = np.array(agree + [(2, 3), (4, 3)], dtype=float).T
    assert near == pytest.approx(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal",
                                                    value_domain=[1, 2, 3, 4, 5]), abs=1e-4)
    assert near != pytest.approx(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal",
                                                    value_domain=[1, 2, 3, 4, 5]), abs=1e-3)


def test_paired_difference_resamples_items_not_models():
    rng = np.random.default_rng(0)
    correct = rng.integers(0, 2, 300).astype(bool)
    a = [{"id": f"q{i}", "dimension": "AesP", "correct": bool(c)} for i, c in enumerate(correct)]
    b = [{**p, "correct": (not p["correct"]) if i < 12 else p["correct"]} for i, p in enumerate(a)]
    row = paired_difference(a, b, "AesP", seed=0, n_boot=2000)
    assert row["n"] == 300 and row["ci_low"] <= row["difference"] <= row["ci_high"]
    # only the 12 disagreements vary when items are resampled with both answers: a narrow
    # interval; resampling the two models' items independently gives about 0.16
    assert row["ci_high"] - row["ci_low"] < 0.06


def test_resume_refuses_a_training_file_of_another_size(tmp_path):
    from aes_lib.io import write_json
    from aes_lib.train.config import TrainConfig
    from aes_lib.train.loop import check_resumable

    cfg = TrainConfig.from_dict(max_steps=10)
    ckpt = tmp_path / "checkpoint-4"
    write_json(ckpt / "config.json", cfg.to_dict())
    write_json(ckpt / "trainer_state.json", {"step": 4, "n_train_samples": 40})
    check_resumable(ckpt, cfg, 40)   # same data: fine
    with pytest.raises(ValueError, match="now has 41 usable samples"):
        check_resumable(ckpt, cfg, 41)
    with pytest.raises(ValueError, match="cannot resume with seed=1"):
        check_resumable(ckpt, TrainConfig.from_dict(max_steps=10, seed=1), 40)
