"""Latent traversal (paper step 5): sweep one latent feature at a time, decode, measure.

Each latent feature is swept from its minimum to its maximum over the encoded discs at
``cfg.interpret.points`` points while every other feature sits at its mean; each code is decoded,
thresholded at 0.5 and measured with the project's own geometry code, so a latent feature's effect
reads as millimetres and degrees. Pure: arrays and frames in and out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..measure import geometry
from ..schema import geometry_columns


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
    """Geometry (``schema.geometry_columns()``) of each decoded disc ``(n, s, s, s)`` thresholded at ``threshold``.

    The whole thresholded mask is measured (the decoder draws one disc); an empty mask gives volume 0
    and NaN elsewhere (``measure_disc``'s convention).
    """
    rows = [geometry.measure_disc(p > threshold, tuple(spacing)) for p in np.asarray(probabilities)]
    return pd.DataFrame(rows, columns=geometry_columns())


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
