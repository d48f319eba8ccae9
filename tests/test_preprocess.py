"""Preprocessing: canonical orientation, resampling, the way back to the scan's grid, normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from scipy.spatial.transform import Rotation

from rayspine.config import Config
from rayspine.preprocess import normalise_intensity, to_canonical, to_canonical_orientation, to_scan_grid
from rayspine.segment.data import disc_foreground, prepare_image, prepare_pair
from rayspine.volume import Volume


def _physical_points(volume: Volume) -> np.ndarray:
    """LPS position of every voxel centre, (X, Y, Z, 3)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), -1).astype(float)
    direction = np.asarray(volume.direction).reshape(3, 3)
    return np.asarray(volume.origin) + (idx * np.asarray(volume.spacing)) @ direction.T


def oblique_scan(spacing=(3.0, 0.9, 1.1), shape=(22, 70, 60), tilt=12.0) -> Volume:
    """A grid stored far from canonical, holding an ellipsoid (label 201).

    Before the tilt, axis 0 runs left->right (flipped x), axis 1 superior->inferior (flipped z) and
    axis 2 anterior->posterior (y); then the whole grid is tilted by ``tilt`` degrees (oblique).
    """
    permuted = np.array([[-1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # columns: axis 0 -> -x, axis 1 -> -z, axis 2 -> +y
    direction = Rotation.from_euler("zx", [tilt, tilt / 2], degrees=True).as_matrix() @ permuted
    empty = Volume(np.zeros(shape, np.uint8), spacing, (40.0, -20.0, 35.0), tuple(direction.ravel()))
    points = _physical_points(empty)
    centre = points.reshape(-1, 3).mean(0)
    q = (points - centre) / np.array([22.0, 18.0, 9.0])  # semi-axes in mm: lateral, AP, height
    inside = (q**2).sum(-1) <= 1.0
    return empty.with_voxels(np.where(inside, 201, 0).astype(np.uint8))


def test_canonical_orientation_runs_axes_along_lps():
    scan = oblique_scan()
    canonical = to_canonical_orientation(scan)
    matrix = np.asarray(canonical.direction).reshape(3, 3)
    # Each array axis now points mostly along +x (R->L), +y (A->P), +z (I->S): a positive dominant diagonal.
    assert np.all(np.argmax(np.abs(matrix), axis=0) == [0, 1, 2])
    assert np.all(np.diag(matrix) > 0.9)
    # Pure permutation and flips: same voxel count, spacing permuted (axis 2 of the scan holds A->P).
    assert canonical.voxels.sum() == scan.voxels.sum()
    assert np.allclose(sorted(canonical.spacing), sorted(scan.spacing))
    assert canonical.spacing[1] == pytest.approx(scan.spacing[2])


def test_mask_round_trip_is_exact_when_the_spacing_is_kept():
    scan = oblique_scan()
    spacing = to_canonical_orientation(scan).spacing
    canonical = to_canonical(scan, spacing, "nearest")
    back = to_scan_grid(canonical, scan)
    assert back.same_grid(scan)
    assert back.voxels.dtype == np.uint8
    assert np.array_equal(back.voxels, scan.voxels)


def test_mask_round_trip_through_the_target_spacing_keeps_the_shape():
    scan = oblique_scan()
    canonical = to_canonical(scan, (1.4, 1.2, 1.5), "nearest")
    back = to_scan_grid(canonical, scan).voxels > 0
    truth = scan.voxels > 0
    dice = 2 * np.count_nonzero(back & truth) / (back.sum() + truth.sum())
    assert dice > 0.95
    # The centre of mass does not move in physical space (no half-voxel shift on the way).
    points = _physical_points(scan)
    assert np.allclose(points[back].mean(0), points[truth].mean(0), atol=0.5)


@pytest.mark.parametrize("soft_labels", [False, True])
def test_prepared_label_lies_on_the_prepared_image(soft_labels):
    cfg = Config().replace(seg={"soft_labels": soft_labels})
    mask = oblique_scan()
    # The image is the mask's ellipsoid made bright, with a gradient along the scan's own axis 0.
    image = mask.with_voxels((mask.voxels > 0) * 100.0 + np.arange(mask.shape[0])[:, None, None] + 10.0)
    item = prepare_pair(image, mask, cfg.grid, cfg.seg)
    assert item["image"].shape == item["label"].shape and item["image"].shape[0] == 1
    values = np.unique(item["label"])
    if soft_labels:  # shares of each voxel: 0 and 1 inside and out, fractions on the rim
        assert item["label"].dtype == np.float32 and values.min() == 0.0 and values.max() == pytest.approx(1.0)
        assert np.count_nonzero((item["label"] > 0.05) & (item["label"] < 0.95)) > 100
    else:
        assert set(values) == {0, 1}
    label = item["label"][0] > 0.5
    image = item["image"][0]
    bright = image > (np.median(image[label]) + np.median(image[~label])) / 2
    assert 2 * np.count_nonzero(bright & label) / (bright.sum() + label.sum()) > 0.95


def test_soft_labels_keep_the_outline_through_the_network_grid():
    # A 1 mm ellipsoid taken to the network's 1.4 x 1.2 x 1.5 mm grid and back (linear, then > 0.5, as
    # inference does with probabilities): as 0/1 nearest-neighbour labels the outline moves by up to a
    # voxel of the coarse grid; as partial-volume shares it survives. Shares also keep the volume.
    cfg = Config()
    mask = oblique_scan(spacing=(1.0, 1.0, 1.0), shape=(60, 60, 60), tilt=17.0)
    truth = mask.voxels > 0
    image = mask.with_voxels(mask.voxels.astype(np.float32))
    dice = {}
    for soft in (False, True):
        item = prepare_pair(image, mask, cfg.grid, cfg.replace(seg={"soft_labels": soft}).seg)
        grid = prepare_image(image, cfg.grid.spacing_mm, cfg.seg.clip_percentiles, cfg.grid.orientation)
        label = grid.with_voxels(item["label"][0].astype(np.float32))
        back = to_scan_grid(label, mask, interpolation="linear").voxels > 0.5
        dice[soft] = 2 * np.count_nonzero(back & truth) / (back.sum() + truth.sum())
        if soft:
            volume = float(item["label"][0].sum()) * np.prod(cfg.grid.spacing_mm)
            assert volume == pytest.approx(float(truth.sum()), rel=0.01)
    assert dice[True] > 0.98
    assert dice[True] > dice[False] + 0.02


def test_disc_foreground_keeps_only_disc_labels():
    labels = np.array([0, 1, 25, 100, 125, 200, 201, 215, 225, 226, 255], np.uint8)
    assert disc_foreground(labels).tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0]


def test_normalisation_is_site_invariant():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 50.0, size=(30, 40, 20)).astype(np.float32)
    image[10:20, 10:30, 5:15] += 400.0
    a = normalise_intensity(image)
    b = normalise_intensity(3.7 * image + 120.0)  # another scanner's gain and offset
    assert not np.allclose(image, 3.7 * image + 120.0)
    assert np.allclose(a, b, atol=1e-4)
    assert a.mean() == pytest.approx(0.0, abs=1e-4) and a.std() == pytest.approx(1.0, abs=1e-4)
    # Outliers are clipped: one hot voxel does not change the others' values.
    spiked = image.copy()
    spiked[0, 0, 0] = 1e6
    assert np.allclose(normalise_intensity(spiked).ravel()[1:], a.ravel()[1:], atol=0.05)


def test_linear_way_back_gives_probabilities():
    scan = oblique_scan()
    canonical = to_canonical(scan, (1.4, 1.2, 1.5), "nearest")
    prob = canonical.with_voxels((canonical.voxels > 0).astype(np.float32) * 0.8)
    back = to_scan_grid(prob, scan, interpolation="linear")
    assert back.voxels.dtype == np.float32
    assert back.voxels.min() >= 0 and back.voxels.max() == pytest.approx(0.8, abs=1e-5)
    inside = scan.voxels > 0
    assert np.median(back.voxels[inside]) == pytest.approx(0.8, abs=1e-5)
