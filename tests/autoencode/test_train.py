"""The disc autoencoder: eval-mode scoring, convergence rule, checkpoints, saving and loading.

Crops are synthetic discs (rounded elliptic cylinders of varied size, wedge and tilt) rasterised into
64^3 at the canonical spacing, centred at their centre of mass, as the crop stage makes them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rayspine.autoencode.infer import load_autoencoder
from rayspine.autoencode.train import save_autoencoder
from rayspine.autoencode.augment import flip_left_right
from rayspine.autoencode.train import evaluate_iou, train_autoencoder
from rayspine.stats import iou_per_item as iou_per_disc
from rayspine.stats import mean_t_ci as mean_ci
from rayspine.config import AEConfig
from rayspine.measure.geometry import disc_rotation
from rayspine.autoencode.networks.conv import DiscAutoencoder
from rayspine.io.cards import ModelFileError

SPACING = (1.4, 1.2, 1.5)


def disc_phantoms(n: int, seed: int = 0, size: int = 64, spacing=SPACING) -> np.ndarray:
    """``(n, size, size, size)`` uint8 synthetic disc crops, centred at their centre of mass."""
    rng = np.random.default_rng(seed)
    axes = [(np.arange(size) - size / 2) * s for s in spacing]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # mm, [x, y, z, 3]
    crops = np.zeros((n, size, size, size), np.uint8)
    for i in range(n):
        lateral, ap, half_height = rng.uniform(17, 26), rng.uniform(12, 19), rng.uniform(3, 7)
        rim = rng.uniform(1.0, 4.0)  # 1: ellipsoid-like rim, larger: flatter, cylinder-like
        wedge = rng.uniform(-0.35, 0.35)  # taller anteriorly or posteriorly (lordosis)
        r = disc_rotation(rng.uniform(-20, 20), rng.uniform(-10, 10), rng.uniform(-8, 8))
        local = grid @ r  # coordinates in the disc's own frame (rows of R^T applied)
        x, y, z = local[..., 0] / lateral, local[..., 1] / ap, local[..., 2]
        r2 = x**2 + y**2
        height = half_height * (1 + wedge * np.clip(y, -1, 1)) * np.sqrt(np.clip(1 - r2**rim, 0, None))
        mask = (r2 <= 1) & (np.abs(z) <= height)
        centre = np.argwhere(mask).mean(axis=0)
        crops[i] = np.roll(mask, tuple(int(v) for v in np.round(size // 2 - centre)), axis=(0, 1, 2))
    return crops


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def phantoms():
    return disc_phantoms(8, seed=1)


def _cfg(**kw) -> AEConfig:
    return AEConfig(**{"max_epochs": 3, "checkpoint_seconds": 0.0, **kw})


def test_phantoms_are_discs(phantoms):
    volumes = phantoms.reshape(len(phantoms), -1).sum(1)
    assert volumes.min() > 500 and volumes.max() < 20000  # a few cm^3 at ~2.5 mm^3 per voxel
    com = np.array([np.argwhere(c).mean(axis=0) for c in phantoms])
    assert np.abs(com - 32).max() <= 0.5 + 1e-9


def test_iou_known_answers():
    a = np.zeros((3, 4, 4, 4), np.uint8)
    b = np.zeros_like(a)
    a[0, :2] = 1
    b[0, :1] = 1  # half of a
    a[1, 0, 0, 0] = 1  # disjoint
    b[1, 1, 1, 1] = 1
    np.testing.assert_allclose(iou_per_disc(a, b), [0.5, 0.0, 1.0])  # two empty masks agree
    mean, low, high = mean_ci(np.array([0.9, 0.92, 0.94]))
    assert mean == pytest.approx(0.92) and low < 0.92 < high and high - low == pytest.approx(2 * 4.303 * 0.02 / np.sqrt(3), rel=1e-3)


def test_flip_keeps_centre_of_mass(phantoms):
    crop = phantoms[0]
    flipped = flip_left_right(crop)
    assert flipped.sum() == crop.sum()
    com, com_f = np.argwhere(crop).mean(0), np.argwhere(flipped).mean(0)
    assert abs(com[0] - com_f[0]) <= 0.5 and np.allclose(com[1:], com_f[1:])
    assert not np.array_equal(flipped, crop)  # the tilted phantom is not left-right symmetric


def test_network_shapes_and_linear_bottleneck():
    net = DiscAutoencoder(5)
    x = torch.zeros(2, 1, 64, 64, 64)
    assert net.encode(x).shape == (2, 5)
    assert net(x).shape == (2, 1, 64, 64, 64)
    assert isinstance(net.to_code, torch.nn.Linear) and net.to_code.out_features == 5
    assert DiscAutoencoder(**net.kwargs()).kwargs() == net.kwargs()
    with pytest.raises(ValueError):
        DiscAutoencoder(4, crop_size=60)


def test_training_lowers_loss_and_reports_eval_mode_iou(phantoms):
    # Without turns and stretches, so that every epoch lowers the loss; the history scores the weights
    # before calibration moves the threshold (tested on its own below), so none here.
    plain = {"augment_rotate_deg": 0.0, "augment_scale": 0.0, "calibrate_threshold": False}
    result = train_autoencoder(phantoms, 4, _cfg(max_epochs=5, batch_size=2, target_iou=1.01, **plain), heldout=phantoms[:2])
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 5 and all(np.diff(losses) < 0) and losses[-1] < 0.8 * losses[0]
    assert not result.converged and result.epochs == 5  # target above 1 cannot be met
    # The reported IoU is the eval-mode one: recompute it independently with numpy.
    net = result.net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(phantoms).float()[:, None])
    eval_iou = iou_per_disc(phantoms, (logits[:, 0] > 0).numpy())
    np.testing.assert_allclose(result.train_iou, eval_iou, atol=1e-9)
    assert result.history[-1]["train_iou"] == pytest.approx(eval_iou.mean())
    np.testing.assert_allclose(result.heldout_iou, eval_iou[:2], atol=1e-9)
    # ... and not the training-mode one (batch statistics of this batch), which differs.
    net.train()
    with torch.no_grad():
        train_logits = net(torch.from_numpy(phantoms).float()[:, None])
    train_mode_iou = iou_per_disc(phantoms, (train_logits[:, 0] > 0).numpy())
    assert np.abs(train_mode_iou - eval_iou).max() > 1e-3


def test_converged_run_stops_at_target(phantoms):
    result = train_autoencoder(phantoms[:4], 3, _cfg(target_iou=-1.0))  # any IoU exceeds it
    assert result.converged and result.epochs == 1 and len(result.history) == 1
    # A time budget (6 ms) spent during the first epoch stops the run there, not converged.
    timed = train_autoencoder(phantoms[:4], 3, _cfg(target_iou=1.01, max_epochs=50, max_minutes=1e-4))
    assert not timed.converged and timed.epochs == 1


def test_disc_alone_and_in_batch_give_same_code(phantoms, tmp_path):
    result = train_autoencoder(phantoms, 4, _cfg(max_epochs=2))
    save_autoencoder(result, tmp_path / "bn4", SPACING)
    model = load_autoencoder(tmp_path / "bn4", device="cpu")
    batch = model.encode(phantoms)
    alone = np.concatenate([model.encode(phantoms[i : i + 1]) for i in range(len(phantoms))])
    np.testing.assert_allclose(alone, batch, atol=1e-5)
    # In training mode batch norm mixes discs: the same disc gets another code in another batch.
    net = model.net.train()
    with torch.no_grad():
        x = torch.from_numpy(phantoms).float()[:, None]
        mixed = net.encode(x)[:1].numpy()
        single = net.encode(x[:2])[:1].numpy()
    model.net.eval()
    assert np.abs(mixed - single).max() > 1e-3
    # IoU scored one disc at a time equals IoU scored in one batch (eval mode).
    np.testing.assert_allclose(evaluate_iou(model.net, phantoms, batch_size=1), evaluate_iou(model.net, phantoms, batch_size=8))


def test_save_load_round_trip_and_card(phantoms, tmp_path):
    result = train_autoencoder(phantoms[:4], 3, _cfg(max_epochs=1))
    folder = save_autoencoder(result, tmp_path / "bn3", SPACING, config_digest="abc")
    card = json.loads((folder / "model.json").read_text())
    assert card["kind"] == "autoencoder" and card["bottleneck"] == 3 and card["spacing_mm"] == list(SPACING)
    assert card["metrics"]["epochs"] == 1 and card["data_hash"] == result.data_hash

    model = load_autoencoder(folder)
    assert model.bottleneck == 3 and model.spacing == SPACING
    z = model.encode(phantoms[:4])
    assert z.shape == (4, 3) and z.dtype == np.float32
    with torch.no_grad():
        expected = result.net.eval().encode(torch.from_numpy(phantoms[:4]).float()[:, None]).numpy()
    np.testing.assert_allclose(z, expected, atol=1e-5)
    probs = model.decode(z)
    assert probs.shape == (4, 64, 64, 64) and probs.dtype == np.float32 and 0 <= probs.min() and probs.max() <= 1
    np.testing.assert_allclose(iou_per_disc(phantoms[:4], probs > 0.5), result.train_iou, atol=1e-9)

    # A sweep folder resolves to its default model.
    (tmp_path / "default.json").write_text(json.dumps({"model": "bn3"}))
    assert load_autoencoder(tmp_path).bottleneck == 3
    # A version-0.1 card (architecture by class name, kwargs at the top level) still loads.
    old = {k: v for k, v in card.items() if k not in ("architecture", "card_version")}
    (folder / "model.json").write_text(json.dumps({**old, "architecture": "DiscAutoencoder", "kwargs": card["architecture"]["kwargs"]}))
    np.testing.assert_allclose(load_autoencoder(folder).encode(phantoms[:4]), z, atol=1e-6)
    # A card of another kind, or weights that do not fit the card, are refused.
    bad = dict(card, architecture={"name": "conv", "kwargs": dict(card["architecture"]["kwargs"], bottleneck=7)})
    (folder / "model.json").write_text(json.dumps(bad))
    with pytest.raises(ModelFileError):
        load_autoencoder(folder)
    (folder / "model.json").write_text(json.dumps(dict(card, kind="segmenter")))
    with pytest.raises(ModelFileError):
        load_autoencoder(folder)
    with pytest.raises(ValueError):
        model.encode(phantoms[:2, :32, :32, :32])


@pytest.mark.parametrize("cosine", [False, True])
def test_interrupted_run_resumes_to_the_same_weights(phantoms, tmp_path, cosine):
    crops = phantoms[:4]
    fresh = train_autoencoder(crops, 3, _cfg(max_epochs=3, target_iou=1.01, lr_cosine=cosine))
    # Interrupted after its first epoch by a time budget (not a setting: the checkpoint stays usable).
    first = train_autoencoder(crops, 3, _cfg(max_epochs=3, target_iou=1.01, lr_cosine=cosine, max_minutes=1e-6), out_dir=tmp_path)
    assert (tmp_path / "checkpoint.pt").is_file() and first.epochs == 1
    resumed = train_autoencoder(crops, 3, _cfg(max_epochs=3, target_iou=1.01, lr_cosine=cosine), out_dir=tmp_path)
    assert resumed.resumed_epoch == 1 and resumed.epochs == 3 and len(resumed.history) == 3
    for key, value in fresh.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    # Other settings: the checkpoint is not used.
    other = train_autoencoder(crops, 3, _cfg(max_epochs=1, learning_rate=1e-4), out_dir=tmp_path)
    assert other.resumed_epoch == 0 and other.epochs == 1


def test_precise_batch_norm_statistics_are_the_data_average(phantoms):
    from rayspine.autoencode.train import recalibrate_batch_norm

    torch.manual_seed(0)
    net = DiscAutoencoder(3).eval()
    recalibrate_batch_norm(net, phantoms, batch_size=len(phantoms), channels_last=False)
    conv, norm = net.encoder[0][0], net.encoder[0][1]
    with torch.no_grad():
        features = conv(torch.from_numpy(phantoms).float()[:, None])  # (n, c, 32, 32, 32)
    per_channel = features.transpose(0, 1).flatten(1)
    torch.testing.assert_close(norm.running_mean, per_channel.mean(1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(norm.running_var, per_channel.var(1, unbiased=True), rtol=1e-4, atol=1e-6)
    assert norm.momentum == 0.1 and not net.training  # settings put back


class _FixedOdds(DiscAutoencoder):
    """Reconstructs a crop at probability 0.42 inside the disc and 0.1 outside: only thresholds at or
    below 0.4 (of the calibration's candidates) give the disc back, and of those 0.4 is nearest 0.5."""

    def __init__(self, bottleneck):
        super().__init__(bottleneck)
        torch.nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, x):
        odds = torch.where(x > 0.5, torch.tensor(0.42 / 0.58), torch.tensor(0.1 / 0.9))
        return torch.log(odds) + self.decoder[-1].bias  # the bias carries the boundary's moves


def test_calibrated_threshold_is_the_best_for_the_training_crops(phantoms):
    from rayspine.autoencode.train import calibrate_threshold

    net = _FixedOdds(3)
    threshold, iou = calibrate_threshold(net, phantoms, channels_last=False)
    assert threshold == 0.4 and (iou == 1.0).all()
    logits = net(torch.from_numpy(phantoms).float()[:, None])[:, 0].detach().numpy()
    assert (iou_per_disc(phantoms, logits > 0) == 1.0).all()  # logits > 0 is now the best mask
    assert calibrate_threshold(net, phantoms, channels_last=False)[0] == 0.5  # already calibrated: left as it is


def test_moving_the_decision_boundary_shifts_the_logits_by_its_log_odds(phantoms):
    torch.manual_seed(0)
    net = DiscAutoencoder(3).eval()
    x = torch.from_numpy(phantoms[:2]).float()[:, None]
    with torch.no_grad():
        before = net(x)
        net.move_decision_boundary(0.4)
        after = net(x)
    torch.testing.assert_close(after, before - np.log(0.4 / 0.6), rtol=0, atol=1e-5)
    assert torch.equal(torch.sigmoid(before) > 0.4, after > 0)


def test_training_calibrates_only_when_asked(phantoms):
    plain = train_autoencoder(phantoms[:4], 3, _cfg(max_epochs=2, calibrate_threshold=False))
    calibrated = train_autoencoder(phantoms[:4], 3, _cfg(max_epochs=2))
    assert plain.decision_threshold == 0.5
    assert calibrated.train_iou.mean() >= plain.train_iou.mean()  # 0.5 is among the candidates
    np.testing.assert_array_equal(calibrated.train_iou, evaluate_iou(calibrated.net, phantoms[:4]))
    shift = np.log(calibrated.decision_threshold / (1 - calibrated.decision_threshold))
    torch.testing.assert_close(calibrated.net.decoder[-1].bias, plain.net.decoder[-1].bias - shift, rtol=0, atol=1e-6)
