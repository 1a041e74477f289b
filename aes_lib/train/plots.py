"""The loss curve of notebook 03: the very figure notebook 05 puts in the gallery, so the two
notebooks smooth the same loss the same way (a debiased exponential moving average)."""

from __future__ import annotations

from pathlib import Path


def plot_loss_curve(loss_csv: str | Path, smoothing: float = 0.9):
    """Per-step training loss, its debiased EMA (factor ``smoothing``) and the learning rate;
    returns the figure (``aes_lib.report.figures.fig_loss_curve`` on ``loss_csv``)."""
    import pandas as pd

    from aes_lib.report.figures import fig_loss_curve
    from aes_lib.train.loop import read_loss_csv

    return fig_loss_curve(pd.DataFrame(read_loss_csv(loss_csv)), smoothing)
