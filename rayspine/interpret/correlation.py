"""Latent x geometry and latent x latent correlations (paper step 5). Pure: a frame in, a frame out."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

CORRELATION_COLUMNS = ["latent", "feature", "r", "p", "n"]


def correlation_table(table: pd.DataFrame, latent: list[str], features: list[str]) -> pd.DataFrame:
    """Long table ``latent, feature, r, p, n``: Pearson r and two-sided p of each latent column against
    each of ``features`` and then each latent column (latent-latent included, the diagonal too), over
    the rows where both are finite. Fewer than 3 rows or a constant column give NaN r and p."""
    from scipy.stats import pearsonr

    numeric = {c: pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float) for c in {*latent, *features}}
    rows = []
    for z in latent:
        for f in [*features, *latent]:
            pair = np.column_stack([numeric[z], numeric[f]])
            pair = pair[np.isfinite(pair).all(axis=1)]
            r = p = float("nan")
            if len(pair) >= 3 and np.ptp(pair[:, 0]) > 0 and np.ptp(pair[:, 1]) > 0:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # near-constant input warnings: r is still defined
                    result = pearsonr(pair[:, 0], pair[:, 1])
                r, p = float(result.statistic), float(result.pvalue)
            rows.append({"latent": z, "feature": f, "r": r, "p": p, "n": len(pair)})
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
