"""Property tests (hypothesis): random masks never crash the geometry and crop functions, angles stay
in (-90, 90], and results do not depend on how equal masks are laid out in memory or in the array."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tests.phantoms import disc_phantom
from rayspine.config import DiscConfig
from rayspine.measure.crops import CROP_FRAMES, crop_disc
from rayspine.measure.instances import disc_instances
from rayspine.measure.geometry import measure_disc
from rayspine.schema import geometry_columns, DiscStatus

ANGLES = ("sagittal_angle_deg", "transverse_angle_deg", "coronal_angle_deg")
LENGTHS = ("height_mm", "ap_width_mm", "lateral_width_mm", "volume_mm3")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.tuples(*[st.integers(1, 12)] * 3)
spacings = st.tuples(*[st.sampled_from([0.4, 0.6, 1.0, 1.5, 3.3, 4.0])] * 3)
masks = shapes.flatmap(lambda shape: arrays(bool, shape, elements=st.booleans()))
# Label masks with SPIDER values: background, vertebrae, canal, discs, and a stray value or two.
label_masks = shapes.flatmap(lambda shape: arrays(np.uint8, shape, elements=st.sampled_from([0, 0, 0, 1, 2, 100, 201, 202, 203, 207, 250])))


def _close(a: dict, b: dict, keys, tol=1e-6):
    for k in keys:
        if math.isnan(a[k]):
            assert math.isnan(b[k]), k
        else:
            assert b[k] == pytest.approx(a[k], rel=tol, abs=tol), k


@SETTINGS
@given(masks, spacings)
def test_measure_disc_never_crashes_and_stays_in_range(mask, spacing):
    g = measure_disc(mask, spacing)
    assert list(g) == geometry_columns()
    assert g["volume_mm3"] == pytest.approx(mask.sum() * float(np.prod(spacing)))
    if not mask.any():
        assert all(math.isnan(g[k]) for k in geometry_columns() if k != "volume_mm3")
        return
    assert all(-90 < g[k] <= 90 for k in ANGLES), g
    assert all(math.isfinite(g[k]) and g[k] > 0 for k in LENGTHS), g
    assert g["lateral_width_mm"] >= g["ap_width_mm"] - 1e-9


@SETTINGS
@given(masks, spacings)
def test_lengths_do_not_depend_on_voxel_order(mask, spacing):
    """Flipping any axis, or permuting axes together with their spacing, is the same solid."""
    g = measure_disc(mask, spacing)
    for axis in range(3):
        _close(g, measure_disc(np.flip(mask, axis), spacing), LENGTHS)
    order = (2, 0, 1)
    permuted = measure_disc(np.transpose(mask, order), tuple(spacing[i] for i in order))
    _close(g, permuted, LENGTHS)
    # memory layout and padding change nothing at all (angles included)
    _close(g, measure_disc(np.asfortranarray(mask), spacing), geometry_columns(), tol=1e-9)
    _close(g, measure_disc(np.pad(mask, ((3, 0), (0, 2), (1, 1))), spacing), geometry_columns(), tol=1e-9)
    _close(g, measure_disc(np.flip(np.flip(mask, 0), 0), spacing), geometry_columns(), tol=0)


@SETTINGS
@given(
    st.floats(-30, 30),
    st.floats(-30, 30),
    st.floats(-30, 30),
    st.tuples(*[st.floats(-1, 1)] * 3),
    st.sampled_from([(1.0, 1.0, 1.0), (3.3, 0.6, 0.6), (1.4, 1.2, 1.5)]),
)
def test_mirrored_disc_mirrors_its_angles(sagittal, transverse, coronal, offset, spacing):
    """Mirroring the array along x (left-right) is the mirror image of the disc: M R M with M = diag(-1, 1, 1)
    equals Rx(s) Rz(-t) Ry(-c), so the sagittal angle stays and the other two change sign; likewise along
    y (s, t change sign) and z (s, c change sign). Lengths stay."""
    mask = disc_phantom(9.0, 46.0, 33.0, sagittal, transverse, coronal, spacing=spacing, offset=offset, margin=2.0)
    g = measure_disc(mask, spacing)
    signs = {0: (1, -1, -1), 1: (-1, -1, 1), 2: (-1, 1, -1)}
    for axis, sign in signs.items():
        m = measure_disc(np.flip(mask, axis), spacing)
        for name, s in zip(ANGLES, sign):
            # +90 and -90 are the same axis: compare on the circle of axis angles
            assert ((m[name] - s * g[name] + 90) % 180 - 90) == pytest.approx(0, abs=1e-6), (axis, name, g, m)
        _close(g, m, LENGTHS)


@SETTINGS
@given(masks, spacings, st.sampled_from([(1.4, 1.2, 1.5), (1.0, 1.0, 1.0)]), st.sampled_from([8, 16, 32]), st.sampled_from(CROP_FRAMES))
def test_crop_disc_never_crashes_and_never_cuts(mask, spacing, target, size, frame):
    crop, status, message = crop_disc(mask, spacing, target, size, frame=frame)
    if not mask.any():
        assert crop is None and status == DiscStatus.TOO_SMALL
    elif crop is None:
        assert status in (DiscStatus.TOO_LARGE, DiscStatus.TOO_SMALL) and message
        if status == DiscStatus.TOO_SMALL:  # only a speck, or a sheet thinner than a canonical voxel, vanishes
            found = np.argwhere(mask)
            extent = (found.max(0) - found.min(0) + 1) * np.asarray(spacing)
            assert np.any(extent < np.asarray(target)) or mask.sum() * np.prod(spacing) < np.prod(target) * 8
    else:
        assert status == DiscStatus.OK and crop.shape == (size,) * 3 and crop.dtype == np.uint8
        assert crop.any()
        # never cut: whatever reaches the crop's faces would also be there in a larger crop
        bigger, _, _ = crop_disc(mask, spacing, target, size + 2, frame=frame)
        assert bigger.sum() == crop.sum()


@SETTINGS
@given(label_masks, spacings, st.booleans())
def test_disc_instances_never_crash(labels, spacing, binary):
    cfg = DiscConfig(min_fragment_mm3=2.0)
    discs = disc_instances(labels, spacing, cfg, binary=binary)
    levels = [d.level for d in discs]
    assert levels == sorted(levels) and len(set(levels)) == len(levels)
    claimed = np.zeros(labels.shape, bool)
    for d in discs:
        if d.mask is None:
            assert d.status == DiscStatus.TOO_SMALL
            continue
        full = d.full_mask(labels.shape)
        assert full.any() and not (full & claimed).any()  # every voxel belongs to one disc at most
        claimed |= full
        source = labels != 0 if binary else labels == 200 + d.level
        assert not (full & ~source).any()  # a disc never takes voxels outside its label
        assert d.volume_mm3 == pytest.approx(full.sum() * float(np.prod(spacing)))
    if binary:  # numbered up the chain from 1; a level is skipped where the chain's step says a disc was missed
        assert not levels or levels[0] == 1
