"""What the latent features mean (paper step 5): latent traversal and latent-geometry correlations.

* **Traversal.** Each latent feature is swept from its minimum to its maximum over the encoded discs at
  ``cfg.interpret.points`` points while every other feature sits at its mean; each code is decoded,
  thresholded at 0.5 and measured with the project's own geometry code, so a latent feature's effect
  reads as millimetres and degrees.
* **Correlations.** Pearson r and p of every latent feature against every geometric feature and every
  latent feature, over the discs of the features table (pairwise complete rows).

The pure parts (``traversal_grid``, ``correlation_table``, ``measure_decoded``) take arrays and frames;
``run_interpret`` is the file-level entry point the CLI calls.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from .classify import USABLE_STATUSES  # the discs whose crop and code can be trusted
from .config import Config
from .schema import GEOMETRY_COLUMNS, latent_columns_of

log = logging.getLogger(__name__)
CORRELATION_COLUMNS = ["latent", "feature", "r", "p", "n"]


def traversal_grid(latents: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes for the traversal of an ``(n, k)`` latent matrix.

    Returns ``values`` ``(k, points)``: feature i's sweep, ``linspace(min_i, max_i, points)``; and
    ``codes`` ``(k, points, k)``: ``codes[i, j]`` is the mean code with feature i set to ``values[i, j]``.
    """
    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim != 2 or len(latents) == 0:
        raise ValueError(f"need an (n, k) latent matrix with n >= 1, got shape {latents.shape}")
    if points < 2:
        raise ValueError("a traversal needs at least 2 points")
    k = latents.shape[1]
    lo, hi, mean = latents.min(axis=0), latents.max(axis=0), latents.mean(axis=0)
    values = np.linspace(lo, hi, points, axis=1)  # (k, points)
    codes = np.broadcast_to(mean, (k, points, k)).copy()
    idx = np.arange(k)
    codes[idx, :, idx] = values
    return values.astype(np.float32), codes.astype(np.float32)


def measure_decoded(probabilities: np.ndarray, spacing, threshold: float = 0.5) -> pd.DataFrame:
    """Geometry (``GEOMETRY_COLUMNS``) of each decoded disc ``(n, s, s, s)`` thresholded at ``threshold``.

    The whole thresholded mask is measured (the decoder draws one disc); an empty mask gives volume 0
    and NaN elsewhere (``measure_disc``'s convention).
    """
    from .geometry import measure_disc

    rows = [measure_disc(p > threshold, tuple(spacing)) for p in np.asarray(probabilities)]
    return pd.DataFrame(rows, columns=GEOMETRY_COLUMNS)


def traversal_table(values: np.ndarray, geometry: pd.DataFrame) -> pd.DataFrame:
    """``latent, step, value`` + geometry columns, from ``values`` ``(k, points)`` and the geometry of the
    decoded codes in ``traversal_grid`` order (latent-major)."""
    k, points = values.shape
    if len(geometry) != k * points:
        raise ValueError(f"{len(geometry)} measurements for a {k} x {points} traversal")
    head = pd.DataFrame(
        {"latent": np.repeat(np.arange(k), points), "step": np.tile(np.arange(points), k), "value": values.ravel()}
    )
    return pd.concat([head, geometry.reset_index(drop=True)], axis=1)


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


# --- file-level entry point -----------------------------------------------------------------------
def run_interpret(ae: Path, features: Path, out: Path, cfg: Config) -> list[Path]:
    """Traversal and correlations for the autoencoder ``ae`` over the discs of ``features``.

    The latent codes come from ``features``' own ``z`` columns; when it has none (or a different number
    than the model's bottleneck) the discs are encoded from ``crops.zarr`` beside ``features``.
    Writes ``traversal.parquet``, ``traversal.png``, ``correlation.csv`` and ``correlation.png``.
    """
    from . import figures
    from .ae_model import load_autoencoder
    from .io.store import write_parquet_atomic, write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_autoencoder(Path(ae))
    discs = pd.read_parquet(features)
    if "status" in discs:
        discs = discs[discs["status"].isin(USABLE_STATUSES)]
    discs = discs.reset_index(drop=True)
    latent = latent_columns_of(discs.columns)
    if len(latent) != model.bottleneck or discs[latent].isna().any(axis=None):
        log.info("encoding the discs' crops: %s has %d latent columns, the model %d", features, len(latent), model.bottleneck)
        discs = discs.drop(columns=latent)
        if "crop_index" in discs:
            discs = discs[discs["crop_index"].fillna(-1) >= 0].reset_index(drop=True)
        codes = _encode_crops(model, discs, Path(features).parent / "crops.zarr")
        latent = [f"z{i}" for i in range(model.bottleneck)]
        discs = pd.concat([discs, pd.DataFrame(codes, columns=latent)], axis=1)
    if discs.empty:
        raise ValueError(f"{features}: no usable discs to interpret")
    spacing = model.spacing if np.all(np.isfinite(model.spacing)) else cfg.grid.spacing_mm

    values, codes = traversal_grid(discs[latent].to_numpy(), cfg.interpret.points)
    k, points = values.shape
    geometry, slices = [], []
    for i in range(k):  # one latent at a time: k x points decoded 64^3 volumes would not fit comfortably
        decoded = model.decode(codes[i])
        geometry.append(measure_decoded(decoded, spacing))
        slices.append([np.stack(figures.central_slices(d)) for d in decoded])
    traversal = traversal_table(values, pd.concat(geometry, ignore_index=True))
    paths = [write_parquet_atomic(pa.Table.from_pandas(traversal, preserve_index=False), out / "traversal.parquet")]
    paths.append(figures.save(figures.traversal_montage(np.asarray(slices), values), out / "traversal.png"))

    geometric = [c for c in GEOMETRY_COLUMNS if c in discs]
    correlations = correlation_table(discs, latent, geometric)
    paths.append(write_text_atomic(correlations.to_csv(index=False), out / "correlation.csv"))
    paths.append(figures.save(figures.correlation_heatmap(correlations), out / "correlation.png"))
    return paths


def _encode_crops(model, discs: pd.DataFrame, crops_root: Path) -> np.ndarray:
    """Codes of the discs' crops (``crops.zarr/<scan_id>``, row ``crop_index``), row i for ``discs`` row i."""
    from .io.store import read_crops_zarr, written_groups

    if "crop_index" not in discs or not crops_root.is_dir():
        raise ValueError(f"the features table has no usable latent columns and there is no {crops_root} to encode")
    available = written_groups(crops_root)
    codes = np.full((len(discs), model.bottleneck), np.nan, dtype=np.float32)
    for scan_id, rows in discs.groupby("scan_id", sort=False):
        if scan_id not in available:
            raise ValueError(f"{crops_root}: no crops for scan {scan_id!r}")
        scan_crops, _ = read_crops_zarr(crops_root, scan_id)
        codes[rows.index.to_numpy()] = model.encode(scan_crops[rows["crop_index"].astype(int).to_numpy()])
    return codes
