"""Canonical orientation, resampling and intensity normalisation, shared by training and inference.

The canonical grid is the scan turned to LPS (axis 0 right->left, 1 anterior->posterior, 2
inferior->superior) and resampled to ``GridConfig.spacing_mm``. ``to_scan_grid`` is the exact way back:
it resamples a canonical-grid mask onto the scan's own grid (nearest neighbour, physical space), so a
mask written for a scan lies on that scan's voxels.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .volume import Volume, from_sitk, to_sitk


def to_canonical_orientation(volume: Volume, orientation: str = "LPS") -> Volume:
    """Permute and flip axes so that they run along ``orientation`` (no interpolation)."""
    return from_sitk(sitk.DICOMOrient(to_sitk(volume), orientation))


def resample(volume: Volume, spacing_mm, interpolation: str = "linear") -> Volume:
    """Resample onto a grid of ``spacing_mm`` covering the same physical extent (same origin, direction)."""
    image = to_sitk(volume)
    old_size = np.asarray(image.GetSize())
    old_spacing = np.asarray(image.GetSpacing())
    new_spacing = np.asarray(spacing_mm, dtype=float)
    new_size = np.maximum(1, np.round(old_size * old_spacing / new_spacing)).astype(int)
    interpolator = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}[interpolation]
    out = sitk.Resample(
        image,
        [int(s) for s in new_size],
        sitk.Transform(),
        interpolator,
        image.GetOrigin(),
        [float(s) for s in new_spacing],
        image.GetDirection(),
        0,
        image.GetPixelID() if interpolation == "nearest" else sitk.sitkFloat32,
    )
    return from_sitk(out)


def to_canonical(volume: Volume, spacing_mm, interpolation: str = "linear", orientation: str = "LPS") -> Volume:
    """Orientation, then spacing: the grid every stage after loading works on."""
    return resample(to_canonical_orientation(volume, orientation), spacing_mm, interpolation)


def to_scan_grid(mask: Volume, reference: Volume, interpolation: str = "nearest") -> Volume:
    """Resample a canonical-grid volume onto ``reference``'s grid (outside it: 0).

    ``"nearest"`` (default) for label masks, giving uint8; ``"linear"`` for probability maps, giving
    float32, so a map thresholded after the way back keeps sub-voxel boundaries on thick slices.
    """
    nearest = interpolation == "nearest"
    out = sitk.Resample(
        to_sitk(mask),
        to_sitk(reference.with_voxels(np.zeros(reference.shape, np.uint8))),
        sitk.Transform(),
        {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear}[interpolation],
        0,
        sitk.sitkUInt8 if nearest else sitk.sitkFloat32,
    )
    return from_sitk(out)


def normalise_intensity(voxels: np.ndarray, clip_percentiles=(0.5, 99.5)) -> np.ndarray:
    """Robust per-scan normalisation that holds across sites: clip to percentiles, then z-score.

    Non-finite voxels become the lowest clipped value before scaling, so they read as background.
    """
    voxels = np.asarray(voxels, dtype=np.float32)
    finite = np.isfinite(voxels)
    values = voxels[finite]
    if values.size == 0:
        raise ValueError("no finite voxels to normalise")
    low, high = np.percentile(values, clip_percentiles)
    clipped = np.clip(np.where(finite, voxels, low), low, high)
    std = float(clipped.std())
    return ((clipped - clipped.mean()) / (std if std > 0 else 1.0)).astype(np.float32)
