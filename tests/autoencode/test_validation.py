"""train_autoencoder's options for held-out work: validation early stop, weight decay, shift and affine augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayspine.autoencode.augment import augment_batch, random_affine
from rayspine.autoencode.train import evaluate_iou, train_autoencoder
from rayspine.config import AEConfig
from tests.autoencode.test_train import disc_phantoms


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def phantoms():
    return disc_phantoms(6, seed=2)


def test_early_stop_returns_the_best_validation_epoch(phantoms):
    train, val = phantoms[:4], phantoms[4:]
    cfg = AEConfig(max_epochs=6, batch_size=2, target_iou=1.01, val_patience=2, checkpoint_seconds=0.0)
    result = train_autoencoder(train, 3, cfg, heldout=val, validation=val)
    vals = [h["val_iou"] for h in result.history]
    best = int(np.argmax(vals))
    # It stopped `val_patience` epochs after the best one (or at max_epochs) ...
    if result.epochs < cfg.max_epochs:
        assert result.epochs == best + 1 + cfg.val_patience
    # ... and the weights it returns are the best epoch's: rescoring them gives that epoch's IoU.
    rescored = evaluate_iou(result.net, val, device="cpu")
    assert rescored.mean() == pytest.approx(vals[best])
    np.testing.assert_allclose(result.heldout_iou, rescored, atol=1e-9)


def test_without_patience_validation_is_only_scored(phantoms):
    cfg = AEConfig(max_epochs=2, batch_size=2, target_iou=1.01, checkpoint_seconds=0.0, weight_decay=1e-4)
    result = train_autoencoder(phantoms[:4], 3, cfg, validation=phantoms[4:])
    assert result.epochs == 2 and all(np.isfinite(h["val_iou"]) for h in result.history)


def test_shift_augmentation_moves_crops_by_at_most_n_voxels(phantoms):
    rng = np.random.default_rng(0)
    moved = augment_batch(phantoms, rng, flips=False, shift=1)
    for before, after in zip(phantoms, moved):
        assert after.sum() == before.sum()
        com_b, com_a = np.argwhere(before).mean(0), np.argwhere(after).mean(0)
        assert np.all(np.abs(com_a - com_b) <= 1 + 1e-9)


class _Draws:
    """A stand-in for numpy's Generator whose ``uniform`` returns given values (in the order asked)."""

    def __init__(self, *values):
        self.values = [np.asarray(v, dtype=float) for v in values]

    def uniform(self, low, high, size):
        return self.values.pop(0)


def _slab(semi=(14.0, 12.0, 4.0), size=64) -> np.ndarray:
    x, y, z = np.meshgrid(*(np.arange(size) - (size - 1) / 2,) * 3, indexing="ij")
    return ((x / semi[0]) ** 2 + (y / semi[1]) ** 2 + (z / semi[2]) ** 2 <= 1).astype(np.uint8)


def _normal_tilt_deg(crop: np.ndarray) -> float:
    """Angle between the crop's thinnest principal axis and axis 2 (the slab's normal before turning)."""
    points = np.argwhere(crop).astype(float)
    _, vectors = np.linalg.eigh(np.cov((points - points.mean(0)).T))
    return float(np.degrees(np.arccos(abs(vectors[2, 0]))))


def test_affine_augmentation_turns_and_stretches_by_the_drawn_amounts():
    slab = _slab()
    assert np.array_equal(random_affine(slab, np.random.default_rng(0), 0.0, 0.0), slab)
    # 12 degrees about axis 0 (the angles are drawn first, then the stretches): the normal tilts by 12.
    turned = random_affine(slab, _Draws([12.0, 0.0, 0.0], [0.0, 0.0, 0.0]), 15.0, 0.1)
    assert _normal_tilt_deg(turned) == pytest.approx(12.0, abs=1.0)
    assert turned.sum() == pytest.approx(slab.sum(), rel=0.03)
    # Axis 0 stretched by 1.1, axis 1 shrunk by 0.9: extents and volume follow, the centre stays.
    stretched = random_affine(slab, _Draws([0.0, 0.0, 0.0], [0.1, -0.1, 0.0]), 15.0, 0.1)
    extent = lambda crop, axis: np.ptp(np.argwhere(crop)[:, axis]) + 1  # noqa: E731
    assert extent(stretched, 0) / extent(slab, 0) == pytest.approx(1.1, abs=0.05)
    assert extent(stretched, 1) / extent(slab, 1) == pytest.approx(0.9, abs=0.05)
    assert stretched.sum() / slab.sum() == pytest.approx(0.99, abs=0.03)
    np.testing.assert_allclose(np.argwhere(stretched).mean(0), np.argwhere(slab).mean(0), atol=0.3)


def test_per_axis_turn_limits_hold_each_axis_to_its_own():
    slab = _slab()
    # Turns about axis 2 (the slab's normal: a disc's transverse angle) never tilt it; turns about axis 0
    # (its sagittal angle) do, by no more than their limit.
    spins = [random_affine(slab, np.random.default_rng(seed), (0.0, 0.0, 40.0), 0.0) for seed in range(4)]
    assert max(_normal_tilt_deg(c) for c in spins) < 1.0
    assert any(not np.array_equal(c, slab) for c in spins)
    tilts = [_normal_tilt_deg(random_affine(slab, np.random.default_rng(seed), (20.0, 0.0, 0.0), 0.0)) for seed in range(4)]
    assert max(tilts) < 21.0 and max(tilts) > 5.0
    # One limit is the same limit on every axis: the same draws, the same crops as three equal limits.
    one = random_affine(slab, np.random.default_rng(7), 10.0, 0.1)
    three = random_affine(slab, np.random.default_rng(7), (10.0, 10.0, 10.0), 0.1)
    assert np.array_equal(one, three)


def test_eval_every_scores_fewer_epochs_and_trains_the_same_weights(phantoms):
    base = dict(max_epochs=4, batch_size=2, target_iou=1.01, checkpoint_seconds=0.0)
    every = train_autoencoder(phantoms[:4], 3, AEConfig(**base), heldout=phantoms[4:])
    sparse = train_autoencoder(phantoms[:4], 3, AEConfig(**base, eval_every=3), heldout=phantoms[4:])
    scored = [h["epoch"] for h in sparse.history if np.isfinite(h["heldout_iou"])]
    assert scored == [3, 4]  # every 3rd epoch and the last
    # Scoring does not touch the weights: same losses, same final scores as scoring every epoch.
    assert [h["loss"] for h in sparse.history] == [h["loss"] for h in every.history]
    np.testing.assert_array_equal(sparse.train_iou, every.train_iou)
    np.testing.assert_array_equal(sparse.heldout_iou, every.heldout_iou)
