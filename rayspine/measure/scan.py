"""One mask in memory -> its discs, their crops and geometry (``measure_mask``; no files, no Ray).

``rayspine measure`` (``command.py``) and the scoring pipeline both measure scans with this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..config import Config
from ..preprocess import to_canonical_orientation
from ..schema import DiscStatus, ScanStatus, disc_label, geometry_columns
from ..volume import IDENTITY, Volume
from . import geometry
from .crops import crop_disc
from .instances import disc_instances, worst_status


@dataclass
class MeasuredScan:
    rows: list[dict]  # one per disc: level, level_confidence, status, message, geometry columns, crop_index (-1: no crop)
    crops: np.ndarray  # (n, s, s, s) uint8, row i is the disc at levels[i]
    levels: list[int]
    status: str = ScanStatus.OK
    message: str = ""
    labels: np.ndarray | None = field(default=None, repr=False)  # disc labels 201.. on the input grid


def measure_mask(mask: Volume, cfg: Config = Config(), binary: bool = False) -> MeasuredScan:
    """Discs, crops and geometry of one label mask (SPIDER labels, or a binary disc mask).

    The mask is turned to LPS without resampling; geometry uses the native spacing on those axes and the
    crops the canonical spacing. ``labels`` gives each measured disc its SPIDER label (200 + level) on the
    input's own grid, so a binary prediction can be stored as a labelled mask.
    """
    size = cfg.discs.crop_size
    empty = np.zeros((0, size, size, size), np.uint8)
    voxels = np.asarray(mask.voxels)
    if voxels.ndim != 3 or voxels.size == 0:
        return MeasuredScan([], empty, [], ScanStatus.BAD_HEADER, f"mask of shape {voxels.shape}, expected 3-D")
    if voxels.dtype == bool:
        mask = mask.with_voxels(voxels.astype(np.uint8))
    elif not np.issubdtype(voxels.dtype, np.integer):
        if not np.all(np.isfinite(voxels)) or np.any(voxels != np.round(voxels)):
            nothing = np.zeros(voxels.shape, np.uint8)
            return MeasuredScan([], empty, [], ScanStatus.BAD_VOXELS, "mask holds non-integer or non-finite values", nothing)
        mask = mask.with_voxels(voxels.astype(np.int64))
    oriented = _oriented(mask)
    spacing = tuple(float(s) for s in oriented.spacing)
    instances = disc_instances(oriented.voxels, spacing, cfg.discs, binary=binary)
    rows, crops, levels = [], [], []
    labelled = np.zeros(oriented.shape, np.uint8)
    for disc in instances:
        row = {"level": disc.level, "level_confidence": disc.level_confidence, "status": disc.status, "message": disc.message, **{k: math.nan for k in geometry_columns()}, "crop_index": -1}
        if disc.mask is not None:
            row.update(geometry.measure_disc(disc.mask, spacing, oriented.direction))
            labelled[disc.bbox][disc.mask] = disc_label(disc.level)
            crop, status, message = crop_disc(disc.mask, spacing, cfg.grid.spacing_mm, size)
            if crop is None:
                row["status"] = worst_status(status, row["status"])
                row["message"] = f"{row['message']}; {message}" if row["message"] else message
            else:
                row["crop_index"] = len(crops)
                crops.append(crop)
                levels.append(disc.level)
        rows.append(row)
    measured = [r for r in rows if not math.isnan(r["volume_mm3"])]
    flagged = [f"level {r['level']}: {r['status']}" for r in rows if r["status"] != DiscStatus.OK]
    if not measured:
        status, message = ScanStatus.NO_DISCS, "no disc found" + (f" ({'; '.join(flagged)})" if flagged else "")
    else:
        status, message = ScanStatus.OK, "; ".join(flagged)
        doubtful = [r["level"] for r in rows if r["level_confidence"] < cfg.discs.min_level_confidence]
        if doubtful:
            status = ScanStatus.LEVEL_UNCERTAIN
            message = f"levels uncertain from level {min(doubtful)} up; " + message
    stacked = np.stack(crops) if crops else empty
    return MeasuredScan(rows, stacked, levels, status, message, _to_input_grid(labelled, mask))


def _oriented(mask: Volume) -> Volume:
    if np.allclose(mask.direction, IDENTITY):
        return mask  # already LPS: skip the round trip through SimpleITK
    return to_canonical_orientation(mask)


def _to_input_grid(labelled: np.ndarray, mask: Volume) -> np.ndarray:
    """Undo the reorientation (a permutation and flips of axes) by orienting the voxels' own indices."""
    if np.allclose(mask.direction, IDENTITY):
        return labelled
    index = mask.with_voxels(np.arange(labelled.size, dtype=np.int32).reshape(mask.shape))
    origin_of = to_canonical_orientation(index).voxels  # oriented voxel -> flat index in the input
    out = np.zeros(labelled.size, np.uint8)
    out[origin_of.ravel()] = labelled.ravel()
    return out.reshape(mask.shape)


def measured_count(rows: list[dict]) -> int:
    """Discs that were measured (a ``too_small`` label has a row but no geometry)."""
    return sum(1 for r in rows if not math.isnan(r["volume_mm3"]))
