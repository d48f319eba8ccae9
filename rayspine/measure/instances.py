"""Disc instances with their levels (pure numpy/scipy).

Masks are arrays ``[x, y, z]`` on an LPS-aligned grid (axis 2 runs inferior -> superior), so "from the
bottom" is increasing z. Nothing here is silently discarded: dropped pieces, suspicious components and
discs too large for the crop carry a ``schema.DiscStatus`` and a message.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..config import DiscConfig
from ..schema import DISC_LABEL_OFFSET, DiscStatus, is_disc_label

Spacing = tuple[float, float, float]
# 26-connectivity: on 3-4 mm slices a tilted disc touches its neighbouring slice only along edges or
# corners, and 6-connectivity would break it into pieces.
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass
class DiscInstance:
    level: int  # number from the bottom (1 = L5/S1 in a lumbar scan), as SPIDER's "IVD label"
    bbox: tuple[slice, slice, slice] | None  # where ``mask`` lies in the input array
    mask: np.ndarray | None  # boolean, the size of ``bbox``; None when the disc was not kept
    status: str = DiscStatus.OK
    message: str = ""
    volume_mm3: float = 0.0

    def full_mask(self, shape) -> np.ndarray:
        """The disc as a boolean array of the input's ``shape``."""
        out = np.zeros(shape, dtype=bool)
        if self.mask is not None:
            out[self.bbox] = self.mask
        return out


def looks_binary(labels: np.ndarray) -> bool:
    """True for a 0/1 disc mask (a prediction), False for a SPIDER label mask (has labels 201..)."""
    labels = np.asarray(labels)
    if labels.size == 0 or (np.issubdtype(labels.dtype, np.floating) and not np.isfinite(labels).all()):
        return False  # nothing to go on, or broken voxels: measure_mask reports those
    return bool(labels.min() >= 0 and labels.max() <= 1)


def disc_instances(labels: np.ndarray, spacing: Spacing, cfg: DiscConfig = DiscConfig(), binary: bool = False) -> list[DiscInstance]:
    """The discs of a SPIDER label mask (labels 201.., level = label - 200) or of a binary disc mask.

    SPIDER labels: each label's largest connected piece is the disc; smaller pieces are dropped and the
    disc is flagged ``fragments_dropped``; a label smaller than ``cfg.min_fragment_mm3`` altogether is
    reported ``too_small`` with no mask. Binary: connected components, levels counted from the bottom;
    components below ``cfg.min_fragment_mm3``, or below ``cfg.min_fraction_of_largest`` of the largest
    component, are dropped and the nearest disc is flagged; a component more than
    ``cfg.merged_volume_ratio`` times the median of the others is flagged ``possibly_merged`` (two discs
    touching?), never split.
    """
    labels = np.asarray(labels)
    voxel_mm3 = float(np.prod(np.asarray(spacing, dtype=float)))
    if binary:
        return _binary_instances(labels != 0, voxel_mm3, cfg)
    return _label_instances(labels, voxel_mm3, cfg)


def kept_foreground(mask: np.ndarray, spacing: Spacing, cfg: DiscConfig = DiscConfig()) -> np.ndarray:
    """What measurement keeps of a binary prediction: the union of its disc instances (boolean)."""
    out = np.zeros(np.shape(mask), dtype=bool)
    for disc in disc_instances(np.asarray(mask), spacing, cfg, binary=True):
        out[disc.bbox] |= disc.mask
    return out


def _label_instances(labels: np.ndarray, voxel_mm3: float, cfg: DiscConfig) -> list[DiscInstance]:
    # Levels 1..25 only (other labels, however large their values, are not discs); find_objects then
    # gives every disc's bounding box in one pass and each disc is handled in its box.
    levels = np.where(is_disc_label(labels), labels - DISC_LABEL_OFFSET, 0).astype(np.uint8)  # wrapped values are masked out
    instances = []
    for level, box in enumerate(ndimage.find_objects(levels), start=1):
        if box is None:
            continue
        index = DISC_LABEL_OFFSET + level
        pieces, n = ndimage.label(levels[box] == level, structure=CONNECTIVITY)
        sizes = np.bincount(pieces.ravel())[1:]
        keep = int(np.argmax(sizes)) + 1
        volume = float(sizes[keep - 1]) * voxel_mm3
        if volume < cfg.min_fragment_mm3:
            message = f"label {index}: largest piece {volume:.0f} mm3, below {cfg.min_fragment_mm3:.0f} mm3; not measured"
            instances.append(DiscInstance(level, None, None, DiscStatus.TOO_SMALL, message, float(sizes.sum()) * voxel_mm3))
            continue
        instance = _instance(level, box, pieces == keep, volume)
        if n > 1:
            dropped = float(sizes.sum() - sizes[keep - 1]) * voxel_mm3
            instance.status = DiscStatus.FRAGMENTS_DROPPED
            instance.message = f"label {index}: kept the largest piece, dropped {n - 1} other piece(s), {dropped:.0f} mm3"
        instances.append(instance)
    return sorted(instances, key=lambda d: d.level)


def _binary_instances(mask: np.ndarray, voxel_mm3: float, cfg: DiscConfig) -> list[DiscInstance]:
    if not mask.any():
        return []
    components, n = ndimage.label(mask, structure=CONNECTIVITY)
    sizes = np.bincount(components.ravel())[1:]
    boxes = ndimage.find_objects(components)
    centres = np.asarray(ndimage.center_of_mass(mask, components, range(1, n + 1))).reshape(n, 3)
    kept = [i for i in range(n) if sizes[i] * voxel_mm3 >= cfg.min_fragment_mm3]
    if not kept:
        return []
    # A piece far smaller than the largest disc is not a disc of this spine (a sacral disc remnant,
    # a vessel, bowel): kept, it would take a level and shift the level of every disc above it.
    largest = max(sizes[i] for i in kept)
    kept = [i for i in kept if sizes[i] >= cfg.min_fraction_of_largest * largest]
    kept.sort(key=lambda i: (centres[i, 2], centres[i, 1], centres[i, 0]))  # from the bottom
    instances = {i: _instance(rank + 1, boxes[i], components[boxes[i]] == i + 1, sizes[i] * voxel_mm3) for rank, i in enumerate(kept)}
    volumes = np.array([sizes[i] for i in kept], dtype=float)
    for k, i in enumerate(kept):
        others = np.delete(volumes, k)
        if len(others) and volumes[k] > cfg.merged_volume_ratio * float(np.median(others)):
            ratio = volumes[k] / float(np.median(others))
            _flag(instances[i], DiscStatus.POSSIBLY_MERGED, f"{ratio:.1f}x the median volume of the other discs: two discs touching?")
    # Small pieces: reported on the nearest disc (most likely its broken-off edges), one note per disc.
    dropped: dict[int, list[int]] = {}
    for i in (i for i in range(n) if i not in instances):
        nearest = min(kept, key=lambda j: float(np.sum((centres[j] - centres[i]) ** 2)))
        dropped.setdefault(nearest, []).append(i)
    for j, pieces in dropped.items():
        total = float(sum(sizes[i] for i in pieces)) * voxel_mm3
        _flag(instances[j], DiscStatus.FRAGMENTS_DROPPED, f"dropped {len(pieces)} fragment(s) nearby, {total:.0f} mm3")
    return [instances[i] for i in kept]


def _instance(level: int, box, mask: np.ndarray, volume: float) -> DiscInstance:
    return DiscInstance(level=level, bbox=tuple(box), mask=mask, volume_mm3=float(volume))


# Which flag a disc shows when it has several (the most serious first); all messages are kept.
_SEVERITY = [DiscStatus.OK, DiscStatus.FRAGMENTS_DROPPED, DiscStatus.POSSIBLY_MERGED, DiscStatus.TOO_LARGE, DiscStatus.TOO_SMALL]


def _flag(instance: DiscInstance, status: str, message: str) -> None:
    if _SEVERITY.index(status) > _SEVERITY.index(instance.status):
        instance.status = status
    instance.message = f"{instance.message}; {message}" if instance.message else message


def worst_status(a: str, b: str) -> str:
    """The more serious of two disc statuses."""
    rank = {s: i for i, s in enumerate(_SEVERITY)}
    return a if rank.get(a, len(rank)) >= rank.get(b, len(rank)) else b
