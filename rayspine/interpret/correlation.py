"""Latent x geometry and latent x latent correlations (paper step 5). Pure: a frame in, a frame out.

Pearson's r (the paper's) and Spearman's rho (robust to the outliers and monotone-but-curved
relations a decoder makes), each with its two-sided p and a p corrected for the number of tests
(Benjamini-Hochberg false discovery rate, SciPy's ``false_discovery_control``). The family corrected
together is every latent x geometry pair and every distinct latent pair: a sweep of k latents against
g features is k g + k (k - 1) / 2 tests, and with 8 latents and 7 features that is 84 tests, so an
uncorrected p < 0.05 would be expected about 4 times by chance.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

CORRELATION_COLUMNS = ["latent", "feature", "r", "p", "p_fdr", "rho", "p_rho", "p_rho_fdr", "n"]


def _pair_statistics(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, int]:
    """(r, p, rho, p_rho, n) over the rows where both are finite; NaN when undefined (n < 3, constant)."""
    from scipy.stats import pearsonr, spearmanr

    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float("nan"), float("nan"), int(len(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # near-constant input warnings: the statistics are still defined
        pearson, spearman = pearsonr(x, y), spearmanr(x, y)
    return float(pearson.statistic), float(pearson.pvalue), float(spearman.statistic), float(spearman.pvalue), int(len(x))


def _fdr(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p of the finite entries (NaN stays NaN)."""
    from scipy.stats import false_discovery_control

    out = np.full(len(p), np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = false_discovery_control(p[finite], method="bh")
    return out


def correlation_table(table: pd.DataFrame, latent: list[str], features: list[str]) -> pd.DataFrame:
    """Long table ``CORRELATION_COLUMNS``: each latent column against each of ``features`` and then each
    latent column (latent-latent included, the diagonal too, for a square heatmap).

    ``p_fdr`` and ``p_rho_fdr`` are corrected over the family of distinct tests (latent x feature and
    latent pairs i < j); a mirrored latent pair carries the same values, the diagonal none.
    """
    numeric = {c: pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float) for c in {*latent, *features}}
    rows = []
    for i, z in enumerate(latent):
        for f in [*features, *latent]:
            j = latent.index(f) if f in latent else None
            r, p, rho, p_rho, n = _pair_statistics(numeric[z], numeric[f])
            rows.append({"latent": z, "feature": f, "r": r, "p": p, "rho": rho, "p_rho": p_rho, "n": n,
                         "tested": j is None or i < j})  # fmt: skip
    out = pd.DataFrame(rows)
    tested = out["tested"].to_numpy()
    for raw, adjusted in (("p", "p_fdr"), ("p_rho", "p_rho_fdr")):
        out[adjusted] = np.nan
        out.loc[tested, adjusted] = _fdr(out.loc[tested, raw].to_numpy(dtype=float))
    # Mirror each latent pair's corrected p onto (j, i); the diagonal is no test.
    corrected = out[tested].set_index(["latent", "feature"])[["p_fdr", "p_rho_fdr"]]
    for k, row in out[~tested].iterrows():
        if row["latent"] != row["feature"]:
            out.loc[k, ["p_fdr", "p_rho_fdr"]] = corrected.loc[(row["feature"], row["latent"])].to_numpy()
    return out[CORRELATION_COLUMNS]


def latent_summary(correlations: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Per latent: the geometric feature it tracks most strongly (largest |r|), that r and its corrected p,
    and its largest |r| with any other latent (the paper: latents mutually uncorrelated, |r| < 0.05)."""
    rows = []
    for z, block in correlations.groupby("latent", sort=False):
        geometric = block[block["feature"].isin(features)].dropna(subset=["r"])
        others = block[~block["feature"].isin(features) & (block["feature"] != z)].dropna(subset=["r"])
        best = geometric.loc[geometric["r"].abs().idxmax()] if len(geometric) else None
        rows.append(
            {
                "latent": z,
                "tracks": best["feature"] if best is not None else None,
                "r": float(best["r"]) if best is not None else float("nan"),
                "p_fdr": float(best["p_fdr"]) if best is not None else float("nan"),
                "max_abs_r_other_latent": float(others["r"].abs().max()) if len(others) else float("nan"),
            }
        )
    return pd.DataFrame(rows)
