"""Held-out folds by person and the linear / lookup shape baselines: known answers."""

from __future__ import annotations

import numpy as np
import pytest

from rayspine import stats
from rayspine.autoencode import baselines as sb


def _boxes(n: int, size: int = 12, seed: int = 0) -> np.ndarray:
    """n distinct random boxes in size^3 crops (uint8)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size, size), np.uint8)
    for i in range(n):
        lo = rng.integers(0, size // 2, 3)
        hi = lo + rng.integers(2, size // 2, 3)
        out[i, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return out


def test_folds_never_share_a_person_and_cover_every_disc_once():
    groups = np.repeat(np.arange(38), 5)
    folds = sb.subject_folds(groups, 5)
    assert len(folds) == 5
    seen = np.concatenate([test for _, test in folds])
    assert sorted(seen.tolist()) == list(range(len(groups)))
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == len(groups)
        fit, val = sb.inner_split(train, groups, 5)
        assert not set(groups[fit]) & set(groups[val])
        assert sorted(np.concatenate([fit, val]).tolist()) == sorted(train.tolist())
    with pytest.raises(ValueError):
        sb.subject_folds(np.arange(3), 5)


def test_pca_with_n_components_reconstructs_the_span_of_n_shapes_exactly():
    shapes = _boxes(4, seed=1)
    rng = np.random.default_rng(2)
    # Training set: many copies of the four shapes (anything in their affine span is representable).
    train = shapes[rng.integers(0, 4, 40)]
    train[:4] = shapes  # every shape present
    assert np.array_equal(sb.pca_reconstruct(train, shapes, 4), shapes)
    # Three components span the centred set of four shapes (rank 3 after removing the mean).
    assert np.array_equal(sb.pca_reconstruct(train, shapes, 3), shapes)
    # One component cannot (the four boxes are not on one line through the mean).
    assert not np.array_equal(sb.pca_reconstruct(train, shapes, 1), shapes)


def test_nearest_disc_of_a_training_disc_is_itself():
    train = _boxes(10, seed=3)
    for metric in ("iou", "l2"):
        index, pred = sb.nearest_disc(train, train, metric)
        assert index.tolist() == list(range(10))
        assert np.array_equal(pred, train)
    iou = sb.pairwise_iou(train, train)
    np.testing.assert_allclose(np.diag(iou), 1.0)
    assert iou.shape == (10, 10) and np.all(iou <= 1 + 1e-9)


def test_mean_shape_is_the_majority_voxels():
    a = np.zeros((3, 4, 4, 4), np.uint8)
    a[:, 0] = 1  # in every crop
    a[:2, 1] = 1  # in two of three
    a[0, 2] = 1  # in one
    m = sb.mean_shape(a, 5)
    assert m.shape == (5, 4, 4, 4)
    assert m[:, 0].all() and m[:, 1].all() and not m[:, 2].any() and not m[:, 3].any()


def test_overlap_scores_and_dice_identity():
    a = np.zeros((2, 4, 4, 4), np.uint8)
    b = np.zeros_like(a)
    a[0, :2] = 1
    b[0, 1:3] = 1  # half overlap: IoU 1/3, Dice 1/2
    s = stats.overlap_scores(a, b)
    np.testing.assert_allclose(s["iou"], [1 / 3, 1.0])  # two empty masks agree
    np.testing.assert_allclose(s["dice"], [0.5, 1.0])
    np.testing.assert_allclose(stats.dice_from_iou(s["iou"]), s["dice"])


def test_intervals_contain_the_mean():
    values = np.linspace(0.6, 0.9, 20)
    groups = np.repeat(np.arange(5), 4)
    m, lo, hi = stats.mean_t_ci(values)
    assert lo < m < hi
    m2, blo, bhi = stats.mean_grouped_bootstrap_ci(values, groups)
    assert m2 == pytest.approx(m) and blo <= m <= bhi
