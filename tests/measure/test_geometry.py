"""Known-answer tests of disc geometry on analytic phantoms, and plausibility on real discs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tests.phantoms import disc_phantom, disc_rotation
from rayspine.measure.geometry import euler_angles, measure_disc
from rayspine.schema import geometry_columns

from tests.conftest import FASTCLEVERSEG_DIR, REAL_SUBJECTS, load_real_subject, require

ISO = (1.0, 1.0, 1.0)
SPIDER = (3.3, 0.6, 0.6)  # 3.3 mm along x (left-right): sagittal slices, as SPIDER's T2 scans
OFFSET = (0.31, -0.23, 0.17)  # keeps the disc's edges off the voxel lattice
ANGLES = ("sagittal_angle_deg", "transverse_angle_deg", "coronal_angle_deg")

SINGLE = [(a * s, 0, 0) for a in (10, 25) for s in (1, -1)]
SINGLE += [(0, a * s, 0) for a in (10, 25) for s in (1, -1)]
SINGLE += [(0, 0, a * s) for a in (10, 25) for s in (1, -1)]
COMBINED = [(15, -10, 20), (-20, 15, -12), (25, 25, 25), (-25, -25, 25), (8, 22, -17), (-12, -18, -24)]
# A coronal tilt of 11-20 degrees with a transverse one: a public implementation reports a transverse
# angle off by ~90 degrees here and swaps height and lateral width.
CORONAL_TRANSVERSE = [(0, t, c) for c in (11, 15, 20) for t in (-20, 8, 25)] + [(5, 12, -16)]


def _shape(case) -> tuple[float, float, float]:
    """A realistic lumbar disc (height, lateral, AP in mm), varied from case to case."""
    k = sum(abs(a) for a in case) % 7
    return 8.0 + 0.7 * k, 44.0 + 1.1 * k, 31.0 + 0.6 * k


def _check(case, spacing, angle_tol, length_tol):
    height, lateral, ap = _shape(case)
    mask = disc_phantom(height, lateral, ap, *case, spacing=spacing, offset=OFFSET)
    g = measure_disc(mask, spacing)
    assert set(g) == set(geometry_columns())
    measured = (g["sagittal_angle_deg"], g["transverse_angle_deg"], g["coronal_angle_deg"])
    np.testing.assert_allclose(measured, case, atol=angle_tol, err_msg=f"angles for {case} at {spacing}")
    np.testing.assert_allclose(
        (g["height_mm"], g["lateral_width_mm"], g["ap_width_mm"]), (height, lateral, ap), atol=length_tol, err_msg=f"lengths for {case} at {spacing}"
    )
    assert g["volume_mm3"] == pytest.approx(mask.sum() * float(np.prod(spacing)))


@pytest.mark.parametrize("case", [(0, 0, 0), *SINGLE, *COMBINED, *CORONAL_TRANSVERSE])
def test_phantom_1mm_isotropic(case):
    _check(case, ISO, angle_tol=1.0, length_tol=1.0)


@pytest.mark.parametrize("case", [(0, 0, 0), *SINGLE, *COMBINED, *CORONAL_TRANSVERSE])
def test_phantom_spider_spacing(case):
    _check(case, SPIDER, angle_tol=2.0, length_tol=3.3 / 2)


@pytest.mark.parametrize("spacing", [ISO, SPIDER])
def test_coronal_tilt_does_not_swap_axes(spacing):
    """Height stays the short axis and the transverse angle stays small when the disc also tilts coronally."""
    for coronal in (11, 14, 17, 20):
        mask = disc_phantom(9.0, 48.0, 33.0, 0, 6, coronal, spacing=spacing, offset=OFFSET)
        g = measure_disc(mask, spacing)
        assert abs(g["transverse_angle_deg"] - 6) < 2, g
        assert abs(g["coronal_angle_deg"] - coronal) < 2, g
        assert abs(g["height_mm"] - 9.0) < 1.65 and abs(g["lateral_width_mm"] - 48.0) < 1.65, g


def test_signs_follow_the_right_hand_rule_in_lps():
    """+t about x lifts the disc's posterior edge (+y) towards superior (+z): R @ y has +z component."""
    mask = disc_phantom(8, 46, 34, sagittal=20, spacing=ISO, offset=OFFSET)
    idx = np.argwhere(mask).astype(float)
    centred = idx - idx.mean(0)
    posterior = centred[centred[:, 1] > 10]
    assert posterior[:, 2].mean() > 2  # posterior part sits higher: a +20 degree sagittal tilt
    assert measure_disc(mask, ISO)["sagittal_angle_deg"] == pytest.approx(20, abs=1)
    # +t about z turns the lateral axis (+x, towards the left) to +y (posterior)
    mask = disc_phantom(8, 46, 34, transverse=20, spacing=ISO, offset=OFFSET)
    left = np.argwhere(mask).astype(float)
    left = left - left.mean(0)
    assert left[left[:, 0] > 15][:, 1].mean() > 2
    assert measure_disc(mask, ISO)["transverse_angle_deg"] == pytest.approx(20, abs=1)
    # +t about y turns the normal (+z) towards +x (the patient's left)
    mask = disc_phantom(8, 46, 34, coronal=20, spacing=ISO, offset=OFFSET)
    left = np.argwhere(mask).astype(float)
    left = left - left.mean(0)
    assert left[left[:, 0] > 15][:, 2].mean() < -2  # the left side dips
    assert measure_disc(mask, ISO)["coronal_angle_deg"] == pytest.approx(20, abs=1)


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, -40, 10), (-70, 20, 55), (89, 0, 0), (10, 60, -80)])
def test_euler_angles_invert_the_design_order(angles):
    assert euler_angles(disc_rotation(*angles)) == pytest.approx(angles, abs=1e-9)


def test_euler_angles_stay_in_half_open_range_for_flipped_frames():
    rotation = disc_rotation(30, -20, 10)
    for flip in (np.diag([1, -1, -1]), np.diag([-1, 1, -1]), np.diag([-1, -1, 1])):
        angles = euler_angles(rotation @ flip)
        assert all(-90 < a <= 90 for a in angles)


@pytest.mark.parametrize("spacing", [ISO, SPIDER])
def test_oblique_grid_angles_are_measured_in_the_patient_frame(spacing):
    """A disc tilted 20 degrees on a grid that is itself turned 10 degrees about x (an oblique scan) is
    tilted 30 degrees in the patient's frame; lengths do not change."""
    mask = disc_phantom(9, 46, 33, sagittal=20, coronal=5, spacing=spacing, offset=OFFSET)
    grid = disc_rotation(sagittal=10)
    straight = measure_disc(mask, spacing)
    oblique = measure_disc(mask, spacing, direction=tuple(grid.ravel()))
    expected = euler_angles(grid @ disc_rotation(20, 0, 5))
    assert expected[0] == pytest.approx(30, abs=0.5)
    np.testing.assert_allclose([oblique[k] for k in ANGLES], expected, atol=2 if spacing == SPIDER else 1)
    for k in ("height_mm", "ap_width_mm", "lateral_width_mm", "volume_mm3"):
        assert oblique[k] == pytest.approx(straight[k], rel=1e-9)


def test_empty_mask_gives_nan_and_zero_volume():
    g = measure_disc(np.zeros((5, 5, 5), bool), ISO)
    assert g["volume_mm3"] == 0
    assert all(math.isnan(g[k]) for k in geometry_columns() if k != "volume_mm3")


def test_volume_is_voxel_count_times_voxel_volume():
    mask = np.zeros((10, 10, 10), bool)
    mask[2:7, 3:5, 1:4] = True
    assert measure_disc(mask, (0.5, 2.0, 3.0))["volume_mm3"] == pytest.approx(30 * 3.0)


# --- real anatomy -----------------------------------------------------------------------------------
@pytest.mark.parametrize("subject", REAL_SUBJECTS)
def test_real_discs_are_plausible(subject):
    _, mask = load_real_subject(subject)
    levels = sorted(set(np.unique(mask.voxels)) - {0})
    assert levels == [201, 202, 203, 204, 205]
    for label in levels:
        g = measure_disc(mask.voxels == label, mask.spacing)
        assert 4 <= g["height_mm"] <= 18, (subject, label, g)
        assert 20 <= g["ap_width_mm"] <= 55, (subject, label, g)
        assert 25 <= g["lateral_width_mm"] <= 65, (subject, label, g)
        assert g["lateral_width_mm"] > g["ap_width_mm"] > g["height_mm"]
        assert all(-45 < g[k] < 45 for k in ("sagittal_angle_deg", "transverse_angle_deg", "coronal_angle_deg"))


@pytest.mark.parametrize("subject", REAL_SUBJECTS)
def test_real_l5s1_volume_matches_published_volume(subject):
    table = pd.read_csv(require(FASTCLEVERSEG_DIR / "disc_volumes_cm3.csv")).set_index("subject")
    _, mask = load_real_subject(subject)
    volume = measure_disc(mask.voxels == 201, mask.spacing)["volume_mm3"]
    assert volume == pytest.approx(table.loc[subject, "L5S1_cm3"] * 1000, rel=0.10)


def test_real_lordosis_sign():
    """The lumbar lordosis: L5/S1 tilts forward-up (positive sagittal angle), the upper discs less or back."""
    _, mask = load_real_subject(REAL_SUBJECTS[0])
    angles = [measure_disc(mask.voxels == label, mask.spacing)["sagittal_angle_deg"] for label in range(201, 206)]
    assert angles[0] > 15 and angles[0] > angles[-1]
