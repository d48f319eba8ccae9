"""The plausibility flag: robust z-scores within a level, known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rayspine.measure.plausibility import MAD_TO_SD, implausible, robust_z


def _discs(values, level=1, status="ok", column="sagittal_angle_deg") -> pd.DataFrame:
    return pd.DataFrame({"level": level, "status": status, column: values})


# 25 values: median 10, MAD 1 (twelve 9s, a 10, eleven 11s and a 20).
VALUES = [9.0] * 12 + [10.0] + [11.0] * 11 + [20.0]


def test_robust_z_is_distance_from_the_median_in_scaled_mads():
    d = _discs(VALUES)
    z = robust_z(d["sagittal_angle_deg"], d["level"])
    assert z.iloc[-1] == pytest.approx(10 / MAD_TO_SD)  # 6.745
    assert z.iloc[0] == pytest.approx(-1 / MAD_TO_SD) and z.iloc[12] == 0.0 and z.iloc[13] == pytest.approx(1 / MAD_TO_SD)


def test_each_level_is_judged_against_its_own_discs():
    # L5/S1 near +30 degrees, L1/L2 near -10: pooled, every L5/S1 would look odd; per level none does,
    # and the one disc far from its own level's distribution is the one flagged.
    l5s1 = _discs([v + 20 for v in VALUES[:-1]] + [30.0], level=1)
    l1l2 = _discs([v - 20 for v in VALUES], level=5)
    notes = implausible(pd.concat([l5s1, l1l2], ignore_index=True))
    assert notes[notes != ""].to_dict() == {49: f"sagittal_angle_deg 0 (z {10 / MAD_TO_SD:+.1f})"}


def test_a_level_whose_values_mostly_agree_uses_the_mean_absolute_deviation():
    d = _discs([5.0] * 20 + [6.0])  # MAD 0: the mean |x - median| (1/21) stands in
    z = robust_z(d["sagittal_angle_deg"], d["level"])
    assert z.iloc[-1] == pytest.approx(1 / (1.2533 / 21)) and (z.iloc[:-1] == 0).all()
    same = _discs([5.0] * 21)
    assert (robust_z(same["sagittal_angle_deg"], same["level"]) == 0).all()


def test_too_few_discs_of_a_level_are_not_judged():
    d = pd.concat([_discs(VALUES, level=1), _discs([1.0, 1.0, 1.0, 1.0, 50.0], level=2)], ignore_index=True)
    z = robust_z(d["sagittal_angle_deg"], d["level"])
    assert z[d.level == 2].isna().all() and z[d.level == 1].notna().all()
    assert implausible(d)[d.level == 2].eq("").all()


def test_flagged_discs_neither_count_nor_are_judged():
    # A possibly merged disc has no trustworthy geometry: it has its flag, not a second one, and its
    # value does not widen the distribution the others are judged against.
    d = pd.concat([_discs(VALUES), _discs([500.0], status="possibly_merged"), _discs([np.nan], status="too_small")], ignore_index=True)
    notes = implausible(d)
    assert notes[24] != "" and notes[25] == "" and notes[26] == ""
    fragments = _discs(VALUES, status="fragments_dropped")  # measured on the main piece: usable
    assert implausible(fragments).iloc[-1] != ""


def test_every_geometry_column_is_checked_and_notes_are_joined():
    d = pd.DataFrame({"level": 1, "status": "ok", "height_mm": VALUES, "volume_mm3": [v * 1000 for v in VALUES]})
    note = implausible(d, columns=["height_mm", "volume_mm3", "not_in_table"]).iloc[-1]
    assert note == "height_mm 20 (z +6.7); volume_mm3 2e+04 (z +6.7)"
