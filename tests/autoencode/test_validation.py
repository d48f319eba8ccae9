"""train_autoencoder's options for held-out work: validation early stop, weight decay, shift augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayspine.autoencode.train import augment_batch, evaluate_iou, train_autoencoder
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
