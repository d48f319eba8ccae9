"""A 3-D image or mask in memory, with its physical grid.

Arrays are indexed ``[x, y, z]`` (ITK's index order, the transpose of SimpleITK's ``GetArrayFromImage``),
so ``spacing[i]`` belongs to array axis ``i``. On the canonical LPS grid axis 0 runs right->left,
axis 1 anterior->posterior and axis 2 inferior->superior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Volume:
    voxels: np.ndarray  # [x, y, z]
    spacing: tuple[float, float, float]  # mm along array axes 0, 1, 2
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mm, physical position of voxel (0, 0, 0)
    direction: tuple[float, ...] = IDENTITY  # 3x3 row-major, columns are the axes' directions in LPS

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.voxels.shape

    def with_voxels(self, voxels: np.ndarray) -> Volume:
        """Same grid, other voxels (a mask for this image, say)."""
        if voxels.shape != self.voxels.shape:
            raise ValueError(f"shape {voxels.shape} does not match the grid {self.voxels.shape}")
        return Volume(voxels, self.spacing, self.origin, self.direction)

    def same_grid(self, other: Volume, tol: float = 1e-3) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=max(tol, 1e-2 * min(self.spacing)))
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def grid(self) -> dict:
        """The grid as plain lists, for JSON / Zarr attributes (float repr round-trips exactly)."""
        return {
            "shape": [int(s) for s in self.shape],
            "spacing": [float(s) for s in self.spacing],
            "origin": [float(o) for o in self.origin],
            "direction": [float(d) for d in self.direction],
        }


def to_sitk(volume: Volume) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.voxels.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in volume.spacing])
    image.SetOrigin([float(o) for o in volume.origin])
    image.SetDirection([float(d) for d in volume.direction])
    return image


def from_sitk(image: sitk.Image) -> Volume:
    voxels = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return Volume(
        np.ascontiguousarray(voxels),
        tuple(float(s) for s in image.GetSpacing()),
        tuple(float(o) for o in image.GetOrigin()),
        tuple(float(d) for d in image.GetDirection()),
    )
