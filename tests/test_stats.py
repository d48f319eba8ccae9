"""Known answers for the statistics the tables report."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from rayspine.stats import pearson_ci


def test_pearson_ci_from_r_and_n_matches_scipys_interval_from_the_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=190)
    y = -0.8 * x + 0.6 * rng.normal(size=190)
    result = pearsonr(x, y)
    low, high = result.confidence_interval(0.95)
    assert pearson_ci(result.statistic, 190) == pytest.approx((low, high), abs=1e-9)
    assert np.isnan(pearson_ci(0.5, 3)).all() and np.isnan(pearson_ci(float("nan"), 100)).all()
