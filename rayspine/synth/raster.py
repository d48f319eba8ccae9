"""Rasterising analytic solids onto an axis-aligned LPS grid (pure numpy).

A voxel belongs to a solid when its centre, in physical space, lies inside the solid, so a mask's voxel
count times the voxel volume estimates the analytic volume without bias. Each solid is tested only inside
its bounding box, which keeps a whole spine to a few tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import Solid


@dataclass(frozen=True)
class Grid:
    """Axis-aligned LPS grid: voxel (i, j, k) has its centre at ``origin + spacing * (i, j, k)``."""

    origin: np.ndarray  # mm
    spacing: np.ndarray  # mm
    shape: tuple[int, int, int]

    @classmethod
    def covering(cls, low, high, spacing) -> Grid:
        """The grid whose voxel centres span the box [low, high] (mm) at ``spacing``."""
        low, high, spacing = (np.asarray(v, dtype=float) for v in (low, high, spacing))
        shape = tuple(int(n) for n in np.floor((high - low) / spacing).astype(int) + 1)
        return cls(low, spacing, shape)

    def axis(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.shape[i] if stop is None else stop
        return self.origin[i] + self.spacing[i] * np.arange(start, stop)

    def contains(self, low, high) -> bool:
        top = self.origin + self.spacing * (np.asarray(self.shape) - 1)
        return bool(np.all(np.asarray(low) >= self.origin) and np.all(np.asarray(high) <= top))


def solid_mask(grid: Grid, solid: Solid) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """The solid's voxels inside its bounding box: (box slices, boolean array), or None when off-grid."""
    ext = solid.extent()
    lo = np.maximum(np.ceil((solid.centre - ext - grid.origin) / grid.spacing), 0).astype(int)
    hi = np.minimum(np.floor((solid.centre + ext - grid.origin) / grid.spacing) + 1, grid.shape).astype(int)
    if np.any(hi <= lo):
        return None
    # Offsets of voxel centres from the solid's centre, one 1-D array per LPS axis (broadcast below).
    d = [grid.axis(i, lo[i], hi[i]) - solid.centre[i] for i in range(3)]
    d = [d[0][:, None, None], d[1][None, :, None], d[2][None, None, :]]
    r = solid.rotation
    u, v, n = ((r[0, c] * d[0] + r[1, c] * d[1] + r[2, c] * d[2]) for c in range(3))
    p = solid.exponent
    if p == 2.0:
        section = (u / solid.a) ** 2 + (v / solid.b) ** 2
    else:
        section = np.abs(u / solid.a) ** p + np.abs(v / solid.b) ** p
    inside = (section <= 1.0) & (np.abs(n) <= solid.half_height * (1.0 - solid.wedge * v / solid.b))
    return tuple(slice(a, b) for a, b in zip(lo, hi)), inside


def rasterise(grid: Grid, solids: list[Solid]) -> tuple[np.ndarray, np.ndarray]:
    """Label map (uint8) and tissue map (uint8) of the solids, later solids drawn over earlier ones."""
    labels = np.zeros(grid.shape, np.uint8)
    tissue = np.zeros(grid.shape, np.uint8)
    for solid in solids:
        found = solid_mask(grid, solid)
        if found is None:
            continue
        box, inside = found
        labels[box][inside] = solid.label
        tissue[box][inside] = solid.tissue
    return labels, tissue
