"""Which measurements lie far outside the archive's own distribution for their disc level (pure pandas).

A disc's geometry is judged against the other discs *of its level* in the same archive: an L5/S1 is
wedged ~30 degrees and an L1/L2 ~-10, so one distribution for all levels would flag every L5/S1. The
centre and spread are the median and the MAD (scaled to a standard deviation), which a few gross
errors (a merged pair, a mask on the wrong structure) cannot drag towards themselves as they would a
mean and a standard deviation. When more than half of a level's values are identical the MAD is 0;
then the mean absolute deviation stands in (Iglewicz & Hoaglin's modified z-score).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..schema import USABLE_DISC_STATUSES, geometry_columns

# 1.4826 * MAD estimates the standard deviation of a normal distribution; 1.2533 * mean |x - median| too.
MAD_TO_SD = 1.4826
MEAN_AD_TO_SD = 1.2533
THRESHOLD = 4.0  # |z| beyond this is flagged: about 1 in 16,000 values of a normal distribution
MIN_DISCS = 20  # fewer discs of a level than this and its median and MAD are too noisy to judge by


def robust_z(values: pd.Series, groups: pd.Series, min_count: int = MIN_DISCS) -> pd.Series:
    """Each value's robust z-score within its group: (x - median) / (1.4826 MAD).

    NaN for missing values and for groups with fewer than ``min_count`` values; 0 for every value of a
    group whose values are all equal.
    """
    values = pd.to_numeric(values, errors="coerce").astype(float)
    z = pd.Series(np.nan, index=values.index, dtype=float)
    for _, x in values.groupby(groups.reindex(values.index), dropna=True):
        x = x.dropna()
        if len(x) < min_count:
            continue
        deviation = (x - x.median()).abs()
        scale = MAD_TO_SD * deviation.median()
        if scale == 0:
            scale = MEAN_AD_TO_SD * deviation.mean()
        z[x.index] = 0.0 if scale == 0 else (x - x.median()) / scale
    return z


def implausible(
    discs: pd.DataFrame,
    columns: list[str] | None = None,
    by: str = "level",
    threshold: float = THRESHOLD,
    min_count: int = MIN_DISCS,
) -> pd.Series:
    """Per disc (``discs``'s index) a note of the measurements with robust |z| > ``threshold`` in their
    ``by`` group, e.g. ``'sagittal_angle_deg 48.1 (z +6.2)'``; '' when none.

    Only usable discs (``schema.USABLE_DISC_STATUSES``) make up the distributions and are judged: a
    disc already flagged too large or possibly merged has that flag and no trustworthy geometry.
    """
    columns = geometry_columns() if columns is None else columns
    notes = pd.Series("", index=discs.index, dtype=object)
    usable = discs[discs["status"].isin(USABLE_DISC_STATUSES)] if "status" in discs else discs
    for column in columns:
        if column not in usable:
            continue
        z = robust_z(usable[column], usable[by], min_count)
        for index in z.index[z.abs() > threshold]:
            note = f"{column} {usable.at[index, column]:.3g} (z {z[index]:+.1f})"
            notes[index] = f"{notes[index]}; {note}" if notes[index] else note
    return notes
