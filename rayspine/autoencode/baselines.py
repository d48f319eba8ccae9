"""Held-out evaluation of disc shape models by person, and the linear / lookup baselines (pure numpy).

An autoencoder's reconstruction IoU on discs of people it never saw is only meaningful next to what
simpler models of the same training discs give:

* **PCA-k**: principal components of the flattened training crops; a held-out crop is projected on
  the first k, reconstructed, and thresholded at 0.5 (``pca_reconstruct``);
* **nearest disc**: the training crop most like the held-out one, by IoU or by L2 (``nearest_disc``);
  a lookup, no model;
* **mean shape**: the voxel-wise mean of the training crops thresholded at 0.5, the same for every
  disc (``mean_shape``).

Folds are by person (``subject_folds``: scikit-learn's ``GroupKFold``), so no person's discs are on
both sides. Scores are per disc (``stats.overlap_scores``), summarised with a Student-t 95 % interval
over discs (``stats.mean_t_ci``) and a bootstrap over people (``stats.mean_grouped_bootstrap_ci``;
discs of one person are not independent).
"""

from __future__ import annotations

import numpy as np


# --- folds ---------------------------------------------------------------------------------------
def subject_folds(groups, k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, test) index pairs with every group (person) in exactly one test fold.

    scikit-learn's ``GroupKFold`` (deterministic: it balances fold sizes, no shuffle)."""
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    if len(np.unique(groups)) < k:
        raise ValueError(f"{len(np.unique(groups))} groups cannot make {k} folds")
    index = np.arange(len(groups))
    return [(train, test) for train, test in GroupKFold(n_splits=k).split(index, groups=groups)]


def inner_split(train: np.ndarray, groups, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training indices into (fit, validation) by person: the first of ``k`` group folds
    of the training people is the validation set (about 1/k of them)."""
    train = np.asarray(train)
    groups = np.asarray(groups)
    fit, val = subject_folds(groups[train], k)[0]
    return train[fit], train[val]


# --- scores --------------------------------------------------------------------------------------
def _flat(crops) -> np.ndarray:
    crops = np.asarray(crops)
    return crops.reshape(len(crops), -1) != 0


# --- baselines -----------------------------------------------------------------------------------
def _support(train: np.ndarray) -> np.ndarray:
    """Voxels set in at least one training crop; everywhere else every baseline predicts background
    (PCA: the mean and every component are exactly 0 there), so only these need computing."""
    return train.any(axis=0)


def pca_reconstruct(train, test, n_components: int, threshold: float = 0.5) -> np.ndarray:
    """Binary reconstructions of ``test`` crops from the first ``n_components`` principal components of
    the ``train`` crops (scikit-learn ``PCA``, exact SVD), thresholded at ``threshold``. uint8."""
    from sklearn.decomposition import PCA

    train_flat, test_flat = _flat(train), _flat(test)
    support = _support(train_flat)
    out = np.zeros(test_flat.shape, np.uint8)
    if not support.any():
        return out.reshape(np.shape(test))
    n = int(min(n_components, len(train_flat), int(support.sum())))
    pca = PCA(n_components=n, svd_solver="full").fit(train_flat[:, support].astype(np.float64))
    recon = pca.inverse_transform(pca.transform(test_flat[:, support].astype(np.float64)))
    out[:, support] = recon > threshold
    return out.reshape(np.shape(test))


def pairwise_iou(train, test) -> np.ndarray:
    """``(n_test, n_train)`` IoU of every test crop with every training crop."""
    train_flat, test_flat = _flat(train), _flat(test)
    keep = _support(train_flat) | test_flat.any(axis=0)
    a, b = test_flat[:, keep].astype(np.float32), train_flat[:, keep].astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def nearest_disc(train, test, metric: str = "iou") -> tuple[np.ndarray, np.ndarray]:
    """For each test crop, the index of the most similar training crop (highest IoU, or smallest L2
    distance of the 0/1 crops, i.e. fewest differing voxels) and that crop as the prediction."""
    train = np.asarray(train)
    if metric == "iou":
        index = np.argmax(pairwise_iou(train, test), axis=1)
    elif metric == "l2":
        train_flat, test_flat = _flat(train), _flat(test)
        keep = _support(train_flat) | test_flat.any(axis=0)
        a, b = test_flat[:, keep].astype(np.float32), train_flat[:, keep].astype(np.float32)
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b for 0/1 vectors: the number of differing voxels.
        dist = a.sum(1)[:, None] + b.sum(1)[None, :] - 2 * (a @ b.T)
        index = np.argmin(dist, axis=1)
    else:
        raise ValueError(f"unknown metric {metric!r}: 'iou' or 'l2'")
    return index, (train[index] != 0).astype(np.uint8)


def mean_shape(train, n: int, threshold: float = 0.5) -> np.ndarray:
    """The voxel-wise mean training crop thresholded at ``threshold``, repeated ``n`` times. uint8."""
    train = np.asarray(train)
    mean = (train != 0).mean(axis=0) > threshold
    return np.repeat(mean[None].astype(np.uint8), n, axis=0)


def baseline_predictions(train, test, pca_components=(4, 8, 64)) -> dict[str, np.ndarray]:
    """Every baseline's binary prediction of ``test`` from ``train``: ``pca<k>``, ``nearest_iou``,
    ``nearest_l2`` and ``mean``."""
    out = {f"pca{k}": pca_reconstruct(train, test, k) for k in pca_components}
    out["nearest_iou"] = nearest_disc(train, test, "iou")[1]
    out["nearest_l2"] = nearest_disc(train, test, "l2")[1]
    out["mean"] = mean_shape(train, len(test))
    return out
