"""Centre-of-mass crops of single discs on the canonical grid (pure numpy/scipy): the autoencoder's input."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..schema import DiscStatus
from .resampling import sample_mask

Spacing = tuple[float, float, float]


def crop_disc(
    disc_mask: np.ndarray, spacing: Spacing, target_spacing: Spacing = (1.4, 1.2, 1.5), size: int = 64, method: str = "slices"
) -> tuple[np.ndarray | None, str, str]:
    """The disc resampled to ``target_spacing``, centred at its centre of mass in a zero-padded
    ``size``^3 uint8 array (1 = disc). Returns ``(crop, status, message)``; a disc that does not fit
    gives ``(None, "too_large", why)``: it is never cut.

    ``method`` is how the mask is resampled (``measure.resampling.METHODS``): ``"slices"`` (shape-based
    interpolation between the slices: no staircases from thick slices, the config's default),
    ``"nearest"`` neighbour, ``"distance"`` or ``"linear"``. The centre of mass is that of the source mask
    in every case.

    Crop voxel i along an axis sits at ``com + (i - (size - 1) / 2) * target`` mm, so the centre of mass
    falls at the crop's centre, (size - 1) / 2.
    """
    mask = np.asarray(disc_mask) != 0
    if not mask.any():
        return None, DiscStatus.TOO_SMALL, "empty disc mask"
    # Work in the disc's bounding box: the rest of the scan is background.
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    mask = mask[box]
    src = np.asarray(spacing, dtype=float)
    dst = np.asarray(target_spacing, dtype=float)
    com = np.asarray(ndimage.center_of_mass(mask)) * src  # mm from the box's first voxel centre
    half = size * dst / 2.0
    low, high = -src / 2.0 - com, (np.asarray(mask.shape) - 0.5) * src - com  # voxel-box extent around the COM
    if np.any(low < -half - 1e-9) or np.any(high > half + 1e-9):
        need = np.max(np.maximum(-low, high) * 2.0 / dst)
        return None, DiscStatus.TOO_LARGE, f"disc spans {need:.0f} voxels of the canonical grid, more than the {size}^3 crop"
    # Output voxel o maps to input index (com + (o - c) * dst) / src: a diagonal affine map, with
    # background outside the box (sample_mask pads the box with background as the method needs).
    scale = dst / src
    # + 1e-6 voxel so that a sample exactly halfway between two voxels always goes the same way,
    # whatever rounding the arithmetic left (crops of any size then agree voxel for voxel).
    offset = (com - (size - 1) / 2.0 * dst) / src + 1e-6
    crop = sample_mask(mask, spacing, scale, offset, (size,) * 3, method)
    if not crop.any() and method != "nearest":
        # An interpolated outline can pass between the samples of a piece barely a canonical voxel across
        # (a speck, a thin sheet): rather than lose it, keep whatever nearest neighbour puts on a sample.
        crop = sample_mask(mask, spacing, scale, offset, (size,) * 3, "nearest")
    if not crop.any():  # smaller than a canonical voxel: the resampling keeps none of it
        return None, DiscStatus.TOO_SMALL, "disc vanishes on the canonical grid (smaller than a voxel)"
    return crop, DiscStatus.OK, ""
