"""Centre-of-mass crops of single discs on the canonical grid (pure numpy/scipy): the autoencoder's input."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ..schema import DiscStatus
from .geometry import disc_moments
from .resampling import sample_mask

Spacing = tuple[float, float, float]
# The crop's axes: "scan", the scan's own (LPS) axes, as in the paper; "disc_plane", each disc tilted so
# that its plane lies flat in the crop (its normal, the least-variance axis of the same moments that
# measure its angles, along the crop's superior axis), by the smallest turn that does it. Statistical
# shape models align shapes before fitting; here that takes the sagittal and coronal tilt, which differ
# from level to level with the lordosis, out of what the autoencoder must encode.
CROP_FRAMES = ("scan", "disc_plane")


def check_frame(frame: str) -> str:
    if frame not in CROP_FRAMES:
        raise ValueError(f"unknown crop frame {frame!r}; choose one of {', '.join(CROP_FRAMES)}")
    return frame


def plane_turn(mask: np.ndarray, spacing: Spacing) -> np.ndarray:
    """The smallest rotation (3x3, mm in array axes) that takes the superior axis (array axis 2 of an LPS
    grid) onto the disc's normal: a crop offset ``p`` then samples the disc at ``turn @ p``."""
    _, _, cov = disc_moments(mask, spacing)
    normal = np.linalg.eigh(cov)[1][:, 0]  # least variance: across the disc
    normal = normal if normal[2] >= 0 else -normal
    turn, _ = Rotation.align_vectors([normal], [[0.0, 0.0, 1.0]])  # one pair: the smallest such turn
    return turn.as_matrix()


def crop_disc(
    disc_mask: np.ndarray,
    spacing: Spacing,
    target_spacing: Spacing = (1.4, 1.2, 1.5),
    size: int = 64,
    method: str = "slices",
    frame: str = "scan",
) -> tuple[np.ndarray | None, str, str]:
    """The disc resampled to ``target_spacing``, centred at its centre of mass in a zero-padded
    ``size``^3 uint8 array (1 = disc). Returns ``(crop, status, message)``; a disc that does not fit
    gives ``(None, "too_large", why)``: it is never cut.

    ``method`` is how the mask is resampled (``measure.resampling.METHODS``): ``"slices"`` (shape-based
    interpolation between the slices: no staircases from thick slices, the config's default),
    ``"nearest"`` neighbour, ``"distance"`` or ``"linear"``. The centre of mass is that of the source mask
    in every case. ``frame`` is the crop's axes (``CROP_FRAMES``).

    Crop voxel i along an axis sits at ``com + (i - (size - 1) / 2) * target`` mm (turned by
    ``plane_turn`` in the disc's frame), so the centre of mass falls at the crop's centre, (size - 1) / 2.
    """
    check_frame(frame)
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
    if frame == "scan":
        low, high = -src / 2.0 - com, (np.asarray(mask.shape) - 0.5) * src - com  # voxel-box extent around the COM
    else:  # every voxel's box in the crop's turned axes
        turn = plane_turn(mask, tuple(src))
        centres = (np.argwhere(mask) * src - com) @ turn
        reach = np.abs(turn).T @ (src / 2.0)
        low, high = centres.min(axis=0) - reach, centres.max(axis=0) + reach
    if np.any(low < -half - 1e-9) or np.any(high > half + 1e-9):
        need = np.max(np.maximum(-low, high) * 2.0 / dst)
        return None, DiscStatus.TOO_LARGE, f"disc spans {need:.0f} voxels of the canonical grid, more than the {size}^3 crop"
    # Output voxel o maps to input index (com + (o - c) * dst) / src: a diagonal affine map (in the disc's
    # frame, (com + turn (o - c) dst) / src), with background outside the box (sample_mask pads the box
    # with background as the method needs).
    centre = np.full(3, (size - 1) / 2.0)
    scale = dst / src if frame == "scan" else (turn * dst) / src[:, None]
    # + 1e-6 voxel so that a sample exactly halfway between two voxels always goes the same way,
    # whatever rounding the arithmetic left (crops of any size then agree voxel for voxel).
    offset = ((com - centre * dst) / src if frame == "scan" else com / src - scale @ centre) + 1e-6
    crop = sample_mask(mask, spacing, scale, offset, (size,) * 3, method)
    if not crop.any() and method != "nearest":
        # An interpolated outline can pass between the samples of a piece barely a canonical voxel across
        # (a speck, a thin sheet): rather than lose it, keep whatever nearest neighbour puts on a sample.
        crop = sample_mask(mask, spacing, scale, offset, (size,) * 3, "nearest")
    if not crop.any():  # smaller than a canonical voxel: the resampling keeps none of it
        return None, DiscStatus.TOO_SMALL, "disc vanishes on the canonical grid (smaller than a voxel)"
    return crop, DiscStatus.OK, ""
