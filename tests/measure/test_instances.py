"""Disc instances, levels, flags and centre-of-mass crops."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tests.phantoms import disc_phantom, spine_phantom
from rayspine.config import DiscConfig
from rayspine.measure.crops import crop_disc
from rayspine.measure.instances import disc_instances, looks_binary
from rayspine.schema import DiscStatus

ISO = (1.0, 1.0, 1.0)
CANONICAL = (1.4, 1.2, 1.5)
CFG = DiscConfig()


def test_spider_labels_give_levels_in_order_with_their_voxels():
    labels = spine_phantom()
    discs = disc_instances(labels, ISO, CFG)
    assert [d.level for d in discs] == [1, 2, 3, 4, 5]
    for d in discs:
        assert d.status == DiscStatus.OK and d.message == ""
        np.testing.assert_array_equal(d.full_mask(labels.shape), labels == 200 + d.level)
        assert d.volume_mm3 == pytest.approx((labels == 200 + d.level).sum())


def test_spider_label_fragments_are_dropped_and_flagged():
    labels = spine_phantom()
    labels[2:5, 2:5, 2:5] = 203  # a stray piece of L3/L4's label far from the disc
    discs = {d.level: d for d in disc_instances(labels, ISO, CFG)}
    assert discs[3].status == DiscStatus.FRAGMENTS_DROPPED and "27 mm3" in discs[3].message
    assert not discs[3].full_mask(labels.shape)[2:5, 2:5, 2:5].any()
    assert discs[3].full_mask(labels.shape).sum() == (labels == 203).sum() - 27
    assert all(discs[k].status == DiscStatus.OK for k in (1, 2, 4, 5))


def test_tiny_spider_label_is_reported_not_measured():
    labels = spine_phantom(n_discs=2)
    labels[2:6, 2:6, 2:6] = 207  # 64 mm3, below min_fragment_mm3 = 150
    discs = disc_instances(labels, ISO, CFG)
    assert [d.level for d in discs] == [1, 2, 7]
    assert discs[-1].status == DiscStatus.TOO_SMALL and discs[-1].mask is None


def test_binary_components_are_levelled_from_the_bottom():
    labels = spine_phantom()
    discs = disc_instances(labels > 200, ISO, CFG, binary=True)
    assert [d.level for d in discs] == [1, 2, 3, 4, 5]
    for d in discs:  # level k from the bottom is exactly SPIDER's disc 200 + k
        np.testing.assert_array_equal(d.full_mask(labels.shape), labels == 200 + d.level)
    # same answer when the spine is upside down in the array but z still runs inferior -> superior
    flipped = disc_instances((labels > 200)[:, ::-1, :], ISO, CFG, binary=True)
    assert [round(d.volume_mm3) for d in flipped] == [round(d.volume_mm3) for d in discs]


def test_binary_fragments_dropped_and_nearest_disc_flagged():
    mask = spine_phantom() > 200
    mask[40, 35, 60:63] = True  # a 3-voxel speck just above disc 2 (centred at z = 52, 5 mm thick)
    discs = disc_instances(mask, ISO, CFG, binary=True)
    assert [d.level for d in discs] == [1, 2, 3, 4, 5]
    assert discs[1].status == DiscStatus.FRAGMENTS_DROPPED
    assert [d.status for i, d in enumerate(discs) if i != 1] == [DiscStatus.OK] * 4


def test_a_small_piece_below_the_spine_takes_no_level():
    # Seen on real T2: a sacral disc remnant (~900 mm3, far above the speck size) segmented below L5/S1.
    mask = spine_phantom() > 200
    volume = mask.sum() / 5
    mask[34:46, 30:40, 2:10] = True  # 960 voxels = 960 mm3 at 1 mm, a ninth of a disc, under disc 1
    assert 960 > CFG.min_fragment_mm3 and 960 < CFG.min_fraction_of_largest * volume
    discs = disc_instances(mask, ISO, CFG, binary=True)
    assert [d.level for d in discs] == [1, 2, 3, 4, 5]
    assert discs[0].status == DiscStatus.FRAGMENTS_DROPPED and "960 mm3" in discs[0].message
    assert np.array_equal(discs[1].full_mask(mask.shape), (spine_phantom() == 202))  # levels unshifted


def test_touching_discs_are_flagged_not_split():
    labels = spine_phantom(gap=13.0, shape=(80, 70, 120), sagittal_step=0.0, n_discs=5)
    mask = labels > 200
    # discs 4 and 5 (tops at 52+5, bottoms at 65-5) joined by a bridge: one component
    mask[35:45, 30:40, 55:62] = True
    discs = disc_instances(mask, ISO, CFG, binary=True)
    assert len(discs) == 4
    merged = [d for d in discs if d.status == DiscStatus.POSSIBLY_MERGED]
    assert len(merged) == 1 and merged[0].level == 4 and "two discs" in merged[0].message


def test_empty_masks_give_no_instances():
    assert disc_instances(np.zeros((4, 4, 4), np.uint8), ISO, CFG) == []
    assert disc_instances(np.zeros((4, 4, 4), np.uint8), ISO, CFG, binary=True) == []
    assert disc_instances(np.ones((4, 4, 4), np.uint8) * 5, ISO, CFG) == []  # vertebra only


def test_looks_binary():
    assert looks_binary(np.array([[[0, 1]]]))
    assert not looks_binary(np.array([[[0, 201]]]))


# --- crops ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spacing", [ISO, (3.3, 0.6, 0.6), CANONICAL])
def test_crop_is_centred_at_the_centre_of_mass_and_keeps_the_volume(spacing):
    mask = disc_phantom(10, 46, 34, 12, -6, 8, spacing=spacing, offset=(0.4, -0.3, 0.2))
    crop, status, message = crop_disc(mask, spacing, CANONICAL, 64)
    assert status == DiscStatus.OK and message == ""
    assert crop.shape == (64, 64, 64) and crop.dtype == np.uint8 and set(np.unique(crop)) == {0, 1}
    # nearest neighbour puts the centre of mass within half a canonical voxel of the crop's centre
    com = np.asarray(ndimage.center_of_mass(crop))
    assert np.all(np.abs(com - 31.5) <= 0.5 + 1e-6), com
    volume = crop.sum() * np.prod(CANONICAL)
    assert volume == pytest.approx(mask.sum() * np.prod(spacing), rel=0.05)
    # nothing at the border: the disc is whole
    assert not crop[[0, -1]].any() and not crop[:, [0, -1]].any() and not crop[:, :, [0, -1]].any()


def test_crop_on_the_canonical_grid_is_an_exact_copy():
    mask = np.zeros((30, 30, 30), bool)
    mask[5:15, 8:12, 10:14] = True  # 10 x 4 x 4 voxels, centre of mass at voxel (9.5, 9.5, 11.5)
    crop, status, _ = crop_disc(mask, CANONICAL, CANONICAL, 64)
    assert status == DiscStatus.OK
    # the centre of mass lands on the crop's centre (31.5, 31.5, 31.5): a pure shift by 22 / 22 / 20 voxels
    expected = np.zeros((64, 64, 64), np.uint8)
    expected[27:37, 30:34, 30:34] = 1
    np.testing.assert_array_equal(crop, expected)


def test_crop_does_not_depend_on_where_the_disc_sits():
    small = disc_phantom(10, 40, 30, 5, 5, 5, spacing=ISO, offset=(0.2, 0.1, 0.3))
    big = np.zeros((120, 110, 100), bool)
    big[17 : 17 + small.shape[0], 30 : 30 + small.shape[1], 5 : 5 + small.shape[2]] = small
    a, _, _ = crop_disc(small, ISO, CANONICAL)
    b, _, _ = crop_disc(big, ISO, CANONICAL)
    np.testing.assert_array_equal(a, b)


def test_too_large_disc_is_reported_never_cut():
    mask = disc_phantom(10, 95, 34, spacing=ISO)  # 95 mm laterally > 64 x 1.4 = 89.6 mm
    crop, status, message = crop_disc(mask, ISO, CANONICAL, 64)
    assert crop is None and status == DiscStatus.TOO_LARGE and "64^3" in message
    crop, status, _ = crop_disc(disc_phantom(10, 85, 34, spacing=ISO), ISO, CANONICAL, 64)
    assert status == DiscStatus.OK and crop.sum() > 0


def test_crop_of_empty_mask():
    crop, status, _ = crop_disc(np.zeros((3, 3, 3), bool), ISO, CANONICAL)
    assert crop is None and status == DiscStatus.TOO_SMALL
