"""Statistics of a benchmark run: bootstrap confidence intervals, SRCC and PLCC.

PLCC follows the usual practice of image-quality work: a four-parameter logistic maps the
predicted scores onto the human scale before Pearson's r is taken.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["bootstrap_ci", "paired_bootstrap", "logistic4", "fit_logistic4", "srcc", "plcc"]


def bootstrap_ci(values: Sequence[float], stat: Callable[[np.ndarray], float] = np.mean,
                 n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over ``values``; the same seed, the same interval.

    Returns ``(nan, nan)`` for no values; a single value gives a zero-width interval.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    if stat is np.mean:
        stats = x[idx].mean(axis=1)
    else:
        stats = np.array([stat(x[i]) for i in idx])
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """``(mean(a - b), low, high)``: the difference of two per-item scores on the same items,
    with a percentile bootstrap interval that resamples *items*, each keeping both scores, so
    the correlation between the two (same questions, same images) narrows the interval as it
    should. ``(nan, nan, nan)`` for no items."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape:
        raise ValueError(f"paired_bootstrap: {x.size} and {y.size} scores; pairs need equal lengths")
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = bootstrap_ci(x - y, n_boot=n_boot, seed=seed, level=level)
    return round(float(np.mean(x - y)), 6), round(lo, 6), round(hi, 6)


def bootstrap_pairs_ci(a: Sequence[float], b: Sequence[float], stat: Callable[[np.ndarray, np.ndarray], float],
                       n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of a paired statistic (SRCC, PLCC) resampling (a, b) pairs together."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.size < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        i = rng.integers(0, x.size, size=x.size)
        if np.ptp(x[i]) == 0 or np.ptp(y[i]) == 0:
            continue
        stats.append(stat(x[i], y[i]))
    if not stats:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha))


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """``b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))``, the four-parameter logistic."""
    z = np.clip(-(np.asarray(x, float) - b3) / (abs(b4) + 1e-12), -60.0, 60.0)
    return b2 + (b1 - b2) / (1.0 + np.exp(z))


def fit_logistic4(pred: Sequence[float], gt: Sequence[float]) -> np.ndarray:
    """Least-squares parameters ``(b1, b2, b3, b4)`` of :func:`logistic4` mapping ``pred`` onto ``gt``.

    The fit is constrained to be non-decreasing (``b1 >= b2``, ``b4 > 0``): a prediction that
    runs against the human scores is not turned into a positive PLCC by a falling curve.
    """
    import warnings

    from scipy.optimize import curve_fit

    x, y = np.asarray(pred, float), np.asarray(gt, float)
    scale = float(np.std(x) or 1.0)

    def rising(v, b2, delta, b3, b4):
        return logistic4(v, b2 + delta, b2, b3, b4)

    p0 = [float(y.min()), float(np.ptp(y) or 1.0), float(np.mean(x)), scale]
    bounds = ([-np.inf, 0.0, -np.inf, 1e-6 * scale], [np.inf, np.inf, np.inf, np.inf])
    try:
        with warnings.catch_warnings():  # a perfect fit has no covariance estimate: harmless
            warnings.simplefilter("ignore")
            (b2, delta, b3, b4), _ = curve_fit(rising, x, y, p0=p0, bounds=bounds, maxfev=5000)
    except (RuntimeError, ValueError):  # no convergence: the starting guess (a rising map)
        b2, delta, b3, b4 = p0
    return np.asarray([b2 + delta, b2, b3, b4])


def srcc(pred: Sequence[float], gt: Sequence[float]) -> float:
    """Spearman rank correlation."""
    from scipy.stats import spearmanr

    return float(spearmanr(pred, gt).statistic)


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    x, y = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def plcc(pred: Sequence[float], gt: Sequence[float], logistic: bool = True) -> float:
    """Pearson correlation, after the (rising) four-parameter logistic fit when ``logistic``."""
    x, y = np.asarray(pred, float), np.asarray(gt, float)
    if logistic:
        x = logistic4(x, *fit_logistic4(x, y))
    return pearson(x, y)
