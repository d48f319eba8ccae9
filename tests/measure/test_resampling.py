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


def test_slices_interpolate_the_outline_between_slices_and_keep_the_end_slabs():
    # Three 4 mm slices along axis 0 holding discs of radius 8, 12 and 8 mm (1 mm in plane), upsampled to
    # 1 mm: halfway between two slice centres the outline is halfway between their radii (10 mm), not
    # the step that nearest neighbour makes; the outer half-slab of each end slice keeps its 8 mm disc.
    radii = (8.0, 12.0, 8.0)
    y, z = np.meshgrid(np.arange(40) + 0.5 - 20, np.arange(40) + 0.5 - 20, indexing="ij")
    thick = np.zeros((5, 40, 40), np.uint8)  # an empty slice on either side
    for k, r in enumerate(radii, start=1):
        thick[k] = y**2 + z**2 <= r**2
    up = resample_mask(thick, (4.0, 1.0, 1.0), (1.0, 1.0, 1.0), "slices")  # 1 mm plane i: centre at i + 0.5 mm
    nearest = resample_mask(thick, (4.0, 1.0, 1.0), (1.0, 1.0, 1.0), "nearest")

    def radius(plane: np.ndarray) -> float:
        return float(np.sqrt(plane.sum() / np.pi))

    # Slice k's centre lies at 4k + 2 mm; halfway between slices 1 and 2: 8 mm (planes 7 and 8 straddle it).
    assert abs(radius(up[7]) + radius(up[8]) - 2 * 10.0) < 0.6
    assert abs(radius(nearest[7]) - 8.0) < 0.3 and abs(radius(nearest[8]) - 12.0) < 0.3  # the step
    # Slice 1's outer half-slab, 4-6 mm (planes 4, 5): the end slice's own disc, to the slab's face.
    for plane in (4, 5):
        assert abs(radius(up[plane]) - 8.0) < 0.3
    assert not up[:4].any() and not up[16:].any()


def test_slices_keep_volume_and_come_closer_to_the_fine_shape_than_nearest():
    fine = _ellipsoid((1.0, 1.0, 1.0))
    thick = _ellipsoid((5.0, 1.0, 1.0))
    ious, volumes = {}, {}
    for method in ("nearest", "slices"):
        up = resample_mask(thick, (5.0, 1.0, 1.0), (1.0, 1.0, 1.0), method)
        ious[method] = (up & fine).sum() / (up | fine).sum()
        volumes[method] = up.sum() / thick.sum() / 5.0
    assert ious["slices"] > ious["nearest"] + 0.01, ious
    assert abs(volumes["slices"] - 1) < 0.01, volumes  # "distance" loses the end slabs' rims (0.975 here)


def test_crop_disc_methods_keep_the_centre_and_reject_unknown_ones():
    thick = _ellipsoid((4.4, 0.5, 0.5))
    for method in METHODS:
        crop, status, _ = crop_disc(thick, (4.4, 0.5, 0.5), method=method)
        assert status == "ok" and crop.shape == (64,) * 3
        com = np.array(np.nonzero(crop)).mean(axis=1)
        np.testing.assert_allclose(com, 31.5, atol=0.6)
    # One 1.5 x 1.5 x 4 mm voxel on a 1 mm grid: the interpolated outlines pass between the samples, so
    # the interpolating methods keep nearest neighbour's crop rather than lose the piece.
    speck = np.ones((1, 1, 1), np.uint8)
    nearest, _, _ = crop_disc(speck, (1.5, 1.5, 4.0), (1.0, 1.0, 1.0), 8, method="nearest")
    for method in ("slices", "distance"):
        crop, status, _ = crop_disc(speck, (1.5, 1.5, 4.0), (1.0, 1.0, 1.0), 8, method=method)
        assert status == "ok" and np.array_equal(crop, nearest) and crop.any()
    with pytest.raises(ValueError, match="unknown mask resampling"):
        crop_disc(thick, (4.4, 0.5, 0.5), method="cubic")


def test_disc_plane_crops_lay_a_tilted_disc_flat_and_keep_its_turn_in_the_plane():
    """A disc tilted 30 degrees sagittally (and turned 8 degrees in its plane), cropped in the disc's frame,
    is the crop of the same disc untilted; the scan's frame keeps the tilt. Known answer for the turn:
    the normal is Rx(30) e_z, so the smallest turn onto it is Rx(30), and the 8 degrees stay."""
    from rayspine.measure.geometry import measure_disc
    from tests.phantoms import disc_phantom

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    target = (1.4, 1.2, 1.5)
    flat = disc_phantom(9.0, 44.0, 32.0, transverse=8.0)
    tilted = disc_phantom(9.0, 44.0, 32.0, sagittal=30.0, transverse=8.0)
    want, _, _ = crop_disc(flat, (1.0, 1.0, 1.0), target, method="nearest")
    unturned, _, _ = crop_disc(flat, (1.0, 1.0, 1.0), target, method="nearest", frame="disc_plane")
    scan, _, _ = crop_disc(tilted, (1.0, 1.0, 1.0), target, method="nearest")
    plane, status, _ = crop_disc(tilted, (1.0, 1.0, 1.0), target, method="nearest", frame="disc_plane")
    assert status == "ok"
    assert iou(unturned, want) > 0.97  # a flat disc is hardly turned
    assert iou(plane, want) > 0.9 > 0.6 > iou(scan, want)
    angles = measure_disc(plane.astype(bool), target)
    assert abs(angles["sagittal_angle_deg"]) < 1.0 and abs(angles["coronal_angle_deg"]) < 1.0
    assert angles["transverse_angle_deg"] == pytest.approx(8.0, abs=1.5)  # the crop grid alone moves it ~1 degree
    assert measure_disc(scan.astype(bool), target)["sagittal_angle_deg"] == pytest.approx(30.0, abs=1.0)
    with pytest.raises(ValueError, match="unknown crop frame"):
        crop_disc(flat, (1.0, 1.0, 1.0), frame="vertebra")
