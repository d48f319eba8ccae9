"""Shape-aware resampling of binary masks (signed distance) next to nearest neighbour."""

from __future__ import annotations

import numpy as np
import pytest

from rayspine.measure.crops import crop_disc
from rayspine.measure.resampling import METHODS, resample_mask, signed_distance


def _ellipsoid(spacing, semi=(20.0, 14.0, 5.0), extent=50.0) -> np.ndarray:
    """A solid ellipsoid (semi-axes mm) sampled at voxel centres of a grid with ``spacing``."""
    axes = [(np.arange(int(round(extent / s))) + 0.5) * s - extent / 2 for s in spacing]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    return ((x / semi[0]) ** 2 + (y / semi[1]) ** 2 + (z / semi[2]) ** 2 <= 1).astype(np.uint8)


def test_signed_distance_crosses_zero_at_the_voxel_faces():
    mask = np.zeros((7, 1, 1), bool)
    mask[2:5] = True
    phi = signed_distance(mask, (2.0, 1.0, 1.0))[:, 0, 0]
    np.testing.assert_allclose(phi, [4, 2, -2, -4, -2, 2, 4])
    assert np.isinf(signed_distance(np.zeros((3, 3, 3)), (1, 1, 1))).all()


@pytest.mark.parametrize("method", METHODS)
def test_same_spacing_gives_the_mask_back(method):
    mask = _ellipsoid((1.0, 1.0, 1.0))
    out = resample_mask(mask, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), method)
    assert out.dtype == np.uint8 and np.array_equal(out, mask)


def test_distance_resampling_of_thick_slices_is_closer_to_the_fine_shape():
    fine = _ellipsoid((1.0, 1.0, 1.0))
    thick = _ellipsoid((5.0, 1.0, 1.0))  # 5 mm slices along axis 0, like a sagittal disc scan
    ious = {}
    for method in ("nearest", "distance"):
        up = resample_mask(thick, (5.0, 1.0, 1.0), (1.0, 1.0, 1.0), method)
        assert up.shape == fine.shape
        ious[method] = (up & fine).sum() / (up | fine).sum()
    assert ious["distance"] > ious["nearest"] + 0.02, ious


def test_crop_disc_methods_keep_the_centre_and_reject_unknown_ones():
    thick = _ellipsoid((4.4, 0.5, 0.5))
    for method in METHODS:
        crop, status, _ = crop_disc(thick, (4.4, 0.5, 0.5), method=method)
        assert status == "ok" and crop.shape == (64,) * 3
        com = np.array(np.nonzero(crop)).mean(axis=1)
        np.testing.assert_allclose(com, 31.5, atol=0.6)
    with pytest.raises(ValueError, match="unknown mask resampling"):
        crop_disc(thick, (4.4, 0.5, 0.5), method="cubic")
