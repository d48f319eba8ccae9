"""One mask in memory -> its discs, their crops and geometry (``measure_mask``; no files, no Ray).

``rayspine measure`` (``command.py``) and the scoring pipeline both measure scans with this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..config import Config
from ..io.labels import SCHEMES, LabelSchemeError, check_scheme, detect_schemes, disc_levels, level_name, resolve_scheme, to_spider
from ..preprocess import to_canonical_orientation
from ..schema import MAX_DISC_LEVEL, DiscStatus, ScanStatus, disc_label, geometry_columns, is_disc_label
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


def measure_mask(mask: Volume, cfg: Config = Config(), binary: bool = False, scheme: str | None = None) -> MeasuredScan:
    """Discs, crops and geometry of one label mask.

    ``scheme`` names the mask's label scheme (``io.labels.SCHEMES``: 'spider', 'spineps', 'totalspineseg',
    'totalspineseg-legacy', 'instances', 'binary', or 'auto' to detect it); its discs are turned into SPIDER's
    levels (``io.labels.to_spider``) and measured as SPIDER labels, so every scheme gives the same rows for the
    same discs. None keeps the default: SPIDER labels, or a binary disc mask when ``binary``. A mask that does
    not fit its scheme is the scan status ``bad_labels``, its message naming the scheme that fits.

    The mask is turned to LPS without resampling; geometry uses the native spacing on those axes and the
    crops the canonical spacing. ``labels`` gives each measured disc its SPIDER label (200 + level) on the
    input's own grid, so a binary prediction can be stored as a labelled mask. Rows carry ``level_name``
    (the tool's name for the disc, e.g. 'L6/S1' in a spine with six lumbar vertebrae) and ``transitional``.
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
    try:
        oriented, binary, names = _in_spider_labels(oriented, binary, scheme)
    except LabelSchemeError as err:
        return MeasuredScan([], empty, [], ScanStatus.BAD_LABELS, str(err), np.zeros(mask.shape, np.uint8))
    spacing = tuple(float(s) for s in oriented.spacing)
    instances = disc_instances(oriented.voxels, spacing, cfg.discs, binary=binary)
    rows, crops, levels = [], [], []
    labelled = np.zeros(oriented.shape, np.uint8)
    for disc in instances:
        name, transitional = names.get(disc.level, (_nominal(disc.level), False))
        row = {"level": disc.level, "level_name": name, "transitional": transitional, "level_confidence": disc.level_confidence,
               "status": disc.status, "message": disc.message, **{k: math.nan for k in geometry_columns()}, "crop_index": -1}  # fmt: skip
        if disc.mask is not None:
            row.update(geometry.measure_disc(disc.mask, spacing, oriented.direction))
            labelled[disc.bbox][disc.mask] = disc_label(disc.level)
            crop, status, message = crop_disc(disc.mask, spacing, cfg.grid.spacing_mm, size, method=cfg.discs.crop_resampling, frame=cfg.discs.crop_frame)
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
    odd = sorted({r["level_name"] for r in rows if r["transitional"]})
    if odd:
        flagged.insert(0, f"transitional anatomy: {', '.join(odd)} (levels counted from the bottom)")
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


def _nominal(level: int) -> str:
    return level_name(level) if 1 <= level <= 23 else f"level {level}"


_SPIDER_LABELS = np.zeros(256, bool)
_SPIDER_LABELS[[0, *SCHEMES["spider"].labels]] = True


def _in_spider_labels(oriented: Volume, binary: bool, scheme: str | None) -> tuple[Volume, bool, dict[int, tuple[str, bool]]]:
    """The oriented mask in SPIDER disc labels, whether to read it as binary, and each level's (name, transitional).

    Relabelled after orienting, so that 'instances' counts levels along the superior axis of LPS (axis 2).
    ``LabelSchemeError`` when the mask does not fit the scheme.
    """
    voxels = oriented.voxels
    if not voxels.any():
        return oriented, binary, {}  # an empty mask fits every scheme: no discs
    if scheme is None:
        if binary:
            return oriented, True, {}
        # SPIDER labels, as before. A label SPIDER does not have, or a mask without SPIDER discs that another
        # tool's scheme reads (SPINEPS's discs 119..124 are SPIDER's partly visible vertebrae), is refused
        # with the scheme that fits, rather than measured as something else.
        if 0 <= voxels.min() and voxels.max() <= 255:
            values = np.flatnonzero(np.bincount(voxels.ravel().astype(np.intp, copy=False)))
            if _SPIDER_LABELS[values].all():
                has_discs = bool(is_disc_label(values).any())
                if has_discs or not set(detect_schemes(voxels)) - {"spider", "instances"}:
                    return oriented, False, {}
        check_scheme(voxels, "spider")  # raises, naming the scheme that fits
        return oriented, False, {}
    chosen = resolve_scheme(voxels, scheme)
    if chosen.kind == "components":
        return oriented, True, {}
    levels = disc_levels(voxels, chosen.name)
    if any(d.level > MAX_DISC_LEVEL for d in levels.values()):
        raise LabelSchemeError(f"more than {MAX_DISC_LEVEL} disc levels under scheme '{chosen.name}'")
    names = {d.level: (d.name, d.transitional) for d in levels.values()}
    return oriented.with_voxels(to_spider(voxels, chosen.name)), False, names


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
