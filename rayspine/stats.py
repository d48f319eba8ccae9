"""Overlap scores and confidence intervals, each written once and named for what it computes.

Pure numpy/scipy: masks and values in, numbers out. Segmentation, the autoencoder, the shape
baselines and the cross-validation all score with these.
"""

from __future__ import annotations

import numpy as np


def iou_dice(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """IoU and Dice of two binary masks; two empty masks agree perfectly (1.0, 1.0)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    inter = np.count_nonzero(pred & truth)
    total = np.count_nonzero(pred) + np.count_nonzero(truth)
    if total == 0:
        return 1.0, 1.0
    return inter / (total - inter), 2.0 * inter / total


def iou_per_item(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """IoU of each pair of binary masks ``(n, ...)``; two empty masks agree perfectly (1.0)."""
    a = np.asarray(truth).astype(bool).reshape(len(truth), -1)
    b = np.asarray(predicted).astype(bool).reshape(len(predicted), -1)
    inter = np.count_nonzero(a & b, axis=1)
    union = np.count_nonzero(a | b, axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def dice_from_iou(iou) -> np.ndarray:
    """Dice of a pair of masks from their IoU (exact per pair: D = 2J / (1 + J))."""
    iou = np.asarray(iou, dtype=float)
    return 2.0 * iou / (1.0 + iou)


def overlap_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """``{"iou", "dice"}`` of each pair of binary masks ``(n, ...)``; two empty masks score 1."""
    iou = iou_per_item(truth, predicted)
    return {"iou": iou, "dice": dice_from_iou(iou)}


def mean_t_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval ``(mean, low, high)`` of independent values.

    NaN bounds for fewer than two values; a constant sample has a zero-width interval.
    """
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if values.size < 2:
        return mean, float("nan"), float("nan")
    if np.all(values == values[0]):
        return mean, mean, mean
    low, high = stats.t.interval(level, values.size - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def mean_bootstrap_ci(values, seed: int = 0, n_resamples: int = 2000) -> dict:
    """``{"mean", "ci95": [low, high], "n"}``: the mean with a 95 % percentile-bootstrap interval (SciPy).

    For a handful of per-scan scores, where a t interval's normality is not worth assuming.
    """
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    if values.size == 1 or np.ptp(values) == 0:
        return {"mean": float(values.mean()), "ci95": [float(values.mean())] * 2, "n": int(values.size)}
    res = bootstrap((values,), np.mean, n_resamples=n_resamples, method="percentile", random_state=seed)
    return {"mean": float(values.mean()), "ci95": [float(res.confidence_interval.low), float(res.confidence_interval.high)], "n": int(values.size)}


def grouped_bootstrap_ci(y, p, groups, metric, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of ``metric(y, p)`` over resamples of whole groups (patients) with replacement.

    Discs of one patient are not independent, so patients, not discs, are resampled. Resamples in which
    the metric is undefined (one class only, for AUC) are skipped.
    """
    import pandas as pd

    y, p = np.asarray(y), np.asarray(p)
    codes, _ = pd.factorize(np.asarray(groups))
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(codes.max() + 1))
    members = np.split(order, starts[1:])
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        chosen = rng.integers(0, len(members), size=len(members))
        rows = np.concatenate([members[g] for g in chosen])
        stats[b] = metric(y[rows], p[rows])
    stats = stats[np.isfinite(stats)]
    if not len(stats):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def mean_grouped_bootstrap_ci(values, groups, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean over items (discs) with a percentile bootstrap interval that
    resamples groups (people), each draw weighting a group by its number of items."""
    values = np.asarray(values, dtype=float)
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(names))
    counts = np.bincount(inverse, minlength=len(names)).astype(float)
    picks = np.random.default_rng(seed).integers(0, len(names), size=(n_boot, len(names)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = (1 - level) / 2 * 100
    return float(values.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def pearson_ci(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Interval for a Pearson r over n pairs by Fisher's z (what ``scipy.stats.pearsonr(...).confidence_interval``
    computes from the data), for tables that keep r and n only."""
    from scipy.stats import norm

    if not np.isfinite(r) or n <= 3:
        return float("nan"), float("nan")
    half = norm.ppf(0.5 + level / 2) / np.sqrt(n - 3)
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    return float(np.tanh(z - half)), float(np.tanh(z + half))
