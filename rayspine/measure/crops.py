"""Centre-of-mass crops of single discs on the canonical grid (pure numpy/scipy): the autoencoder's input."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..schema import DiscStatus

Spacing = tuple[float, float, float]


def crop_disc(disc_mask: np.ndarray, spacing: Spacing, target_spacing: Spacing = (1.4, 1.2, 1.5), size: int = 64) -> tuple[np.ndarray | None, str, str]:
    """The disc resampled (nearest neighbour) to ``target_spacing``, centred at its centre of mass in a
    zero-padded ``size``^3 uint8 array (1 = disc). Returns ``(crop, status, message)``; a disc that does
    not fit gives ``(None, "too_large", why)``: it is never cut.

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
    # Output voxel o maps to input index (com + (o - c) * dst) / src: a diagonal affine map, resampled
    # with order 0 (nearest neighbour) and background outside the box.
    # The box gets one voxel of background on every side: scipy's "constant" mode returns cval for any
    # sample beyond the outermost voxel *centre*, which would shave half a voxel off each face.
    scale = dst / src
    # + 1 for the padding; + 1e-6 voxel so that a sample exactly halfway between two voxels always goes
    # the same way, whatever rounding the arithmetic left (crops of any size then agree voxel for voxel).
    offset = (com - (size - 1) / 2.0 * dst) / src + 1.0 + 1e-6
    padded = np.pad(mask.astype(np.uint8), 1)
    crop = ndimage.affine_transform(padded, scale, offset=offset, output_shape=(size,) * 3, order=0, mode="constant", cval=0)
    if not crop.any():  # smaller than a canonical voxel: nearest neighbour samples none of it
        return None, DiscStatus.TOO_SMALL, "disc vanishes on the canonical grid (smaller than a voxel)"
    return crop, DiscStatus.OK, ""
