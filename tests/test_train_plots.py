from aes_lib.train import plot_loss_curve


def test_loss_curve_shows_steps_and_running_mean(tmp_path):
    path = tmp_path / "loss.csv"
    rows = "".join(f"{s},{6.0 / s:.4f},0.001,{100 * s},{0.1 * s:.1f}\n" for s in range(1, 41))
    path.write_text("step,loss,lr,tokens,seconds\n" + rows)
    fig = plot_loss_curve(path, window=5)
    raw, mean = fig.axes[0].get_lines()
    assert list(raw.get_xdata()) == list(range(1, 41))
    assert raw.get_ydata()[0] == 6.0 and mean.get_label() == "5-step mean"
    assert abs(mean.get_ydata()[-1] - sum(6.0 / s for s in range(36, 41)) / 5) < 1e-3
