from aes_lib.train import plot_loss_curve


def test_loss_curve_shows_steps_and_the_debiased_ema(tmp_path):
    """Notebook 03's curve is notebook 05's: raw loss, debiased EMA, learning rate."""
    path = tmp_path / "loss.csv"
    rows = "".join(f"{s},{6.0 / s:.4f},0.001,{100 * s},{0.1 * s:.1f}\n" for s in range(1, 41))
    path.write_text("step,loss,lr,tokens,seconds\n" + rows)
    fig = plot_loss_curve(path, smoothing=0.5)
    raw, smooth = fig.axes[0].get_lines()
    assert list(raw.get_xdata()) == list(range(1, 41))
    assert raw.get_ydata()[0] == 6.0 and smooth.get_label() == "smoothed (debiased EMA 0.5)"
    assert smooth.get_ydata()[0] == 6.0                      # debiased: the first point is the first loss
    acc = 0.0
    for s in range(1, 41):
        acc = 0.5 * acc + 0.5 * round(6.0 / s, 4)
    assert abs(smooth.get_ydata()[-1] - acc / (1 - 0.5 ** 40)) < 1e-9
    assert len(fig.axes) == 2                                 # loss above, learning rate below
