"""The loss curve as notebook 03 shows it (notebook 05 draws the gallery's version)."""

from __future__ import annotations

from pathlib import Path


def plot_loss_curve(loss_csv: str | Path, window: int = 20):
    """Per-step training loss with a ``window``-step running mean; returns the figure."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from aes_lib.train.loop import read_loss_csv

    loss = pd.DataFrame(read_loss_csv(loss_csv))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(loss.step, loss.loss, alpha=0.35, label="training loss per step")
    ax.plot(loss.step, loss.loss.rolling(window, min_periods=1).mean(), label=f"{window}-step mean")
    ax.set(xlabel="optimizer step", ylabel="cross-entropy (assistant tokens)",
           title="Fine-tuning loss, measured by this run")
    ax.legend()
    return fig
