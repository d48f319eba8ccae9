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
from .geometry import disc_frame, disc_moments

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
    level_confidence: float = 1.0  # 0..1: how sure the numbering is (1 for SPIDER labels, which carry it)

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
    reported ``too_small`` with no mask (level_confidence 1: the labels carry the level). Binary:
    connected components; components below ``cfg.min_fragment_mm3``, or below
    ``cfg.min_fraction_of_largest`` of the largest component, are dropped and the nearest disc is
    flagged; the rest are numbered along the chain of discs (``number_chain``: pieces off it and a
    sacral remnant take no level), each with its ``level_confidence``; a component more than
    ``cfg.merged_volume_ratio`` times the median of the others is flagged ``possibly_merged`` (two discs
    touching?), never split.
    """
    labels = np.asarray(labels)
    voxel_mm3 = float(np.prod(np.asarray(spacing, dtype=float)))
    if binary:
        return _binary_instances(labels != 0, tuple(float(s) for s in spacing), cfg)
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


def _binary_instances(mask: np.ndarray, spacing: Spacing, cfg: DiscConfig) -> list[DiscInstance]:
    if not mask.any():
        return []
    voxel_mm3 = float(np.prod(np.asarray(spacing, dtype=float)))
    components, n = ndimage.label(mask, structure=CONNECTIVITY)
    sizes = np.bincount(components.ravel())[1:]
    boxes = ndimage.find_objects(components)
    # Each piece's centre within its own box: scipy's labelled form multiplies the whole volume by each
    # axis's coordinates (0.1-0.4 s of a full-size scan's measure step; about 0.015 s this way).
    centres = np.array([np.add(ndimage.center_of_mass(components[box] == i + 1), [s.start for s in box]) for i, box in enumerate(boxes)])
    kept = [i for i in range(n) if sizes[i] * voxel_mm3 >= cfg.min_fragment_mm3]
    if not kept:
        return []
    # A piece far smaller than the largest disc is not a disc of this spine (a speck, a vessel).
    largest = max(sizes[i] for i in kept)
    kept = [i for i in kept if sizes[i] >= cfg.min_fraction_of_largest * largest]
    pieces = {i: piece_shape(components[boxes[i]] == i + 1, spacing, boxes[i]) for i in kept}
    numbering = number_chain(pieces, cfg)
    off_chain = {i for i in kept if i not in numbering.levels}
    instances = {
        i: _instance(level, boxes[i], components[boxes[i]] == i + 1, sizes[i] * voxel_mm3, numbering.confidence[i])
        for i, level in numbering.levels.items()
    }
    chain = sorted(instances, key=lambda i: instances[i].level)
    if not chain:
        return []
    volumes = np.array([sizes[i] for i in chain], dtype=float)
    for k, i in enumerate(chain):
        others = np.delete(volumes, k)
        if len(others) and volumes[k] > cfg.merged_volume_ratio * float(np.median(others)):
            ratio = volumes[k] / float(np.median(others))
            _flag(instances[i], DiscStatus.POSSIBLY_MERGED, f"{ratio:.1f}x the median volume of the other discs: two discs touching?")
    for i, note in numbering.notes.items():
        _flag(instances[i], instances[i].status, note)
    # Pieces that take no level: reported on the nearest disc, one note per disc and kind.
    dropped: dict[tuple[int, str], list[int]] = {}
    for i in (i for i in range(n) if i not in instances):
        nearest = min(chain, key=lambda j: float(np.sum((centres[j] - centres[i]) ** 2)))
        why = numbering.dropped.get(i, "off the spine's chain of discs" if i in off_chain else "fragment(s) nearby")
        dropped.setdefault((nearest, why), []).append(i)
    for (j, why), group in dropped.items():
        total = float(sum(sizes[i] for i in group)) * voxel_mm3
        _flag(instances[j], DiscStatus.FRAGMENTS_DROPPED, f"dropped {len(group)} piece(s), {why}, {total:.0f} mm3")
    return [instances[i] for i in chain]


@dataclass(frozen=True)
class PieceShape:
    """What the numbering needs of a connected piece: where it is, which way it faces, how big it is."""

    centre: np.ndarray  # mm, in the array's LPS frame
    normal: np.ndarray  # unit, pointing superior
    volume_mm3: float
    height_mm: float  # volume / outline area, as measure.geometry defines it
    lateral_mm: float
    sagittal_deg: float  # the normal's tilt towards anterior: largest at L5/S1 in a lordotic spine


def piece_shape(piece: np.ndarray, spacing: Spacing, box=None) -> PieceShape:
    """The shape of one boolean piece (in its bounding ``box`` of the whole array, if given)."""
    n, centre, cov = disc_moments(piece, spacing)
    variances, rotation = disc_frame(cov)
    normal = rotation[:, 2] if rotation[2, 2] >= 0 else -rotation[:, 2]
    lateral, ap = (4.0 * np.sqrt(max(v, 0.0)) for v in variances[:2])
    volume = n * float(np.prod(spacing))
    if box is not None:
        centre = centre + np.array([s.start for s in box]) * np.asarray(spacing, float)
    height = volume / (np.pi / 4.0 * lateral * ap) if lateral * ap > 0 else 0.0
    sagittal = float(np.degrees(np.arctan2(-normal[1], normal[2])))
    return PieceShape(centre, normal, volume, float(height), float(lateral), sagittal)


@dataclass
class Numbering:
    levels: dict  # piece -> level (1 = the lowest disc of the spine, SPIDER's "IVD label")
    confidence: dict  # piece -> level_confidence, 0..1
    notes: dict  # piece -> why its level is doubtful
    dropped: dict  # piece -> why it takes no level (when not just "off the chain")


def number_chain(pieces: dict[int, PieceShape], cfg: DiscConfig) -> Numbering:
    """Levels for the pieces of a binary mask: the discs are the longest chain up the spine, numbered
    from the disc on the sacrum.

    A link joins two pieces when the step between their centres runs along both their normals (within
    ``cfg.chain_max_angle_deg``: the column is perpendicular to its discs) and is about a whole number of
    typical steps long (a disc and a vertebra; two or three when discs were missed between). Pieces
    off the longest chain (behind the sacrum, bowel, vessels) take no level. The chain's lowest piece is
    then judged by what a disc says of itself: a sacral remnant is small and narrow and is dropped; a
    full disc is L5/S1, and it should be the most tilted (lordosis). Each level carries a confidence,
    the product of the anchor's and of every step's below it.
    """
    out = Numbering({}, {}, {}, {})
    if not pieces:
        return out
    order = sorted(pieces, key=lambda i: pieces[i].centre[2])
    max_cos = np.cos(np.radians(cfg.chain_max_angle_deg))

    def along(i, j) -> float:  # the step's length when it runs along both normals, else 0
        step = pieces[j].centre - pieces[i].centre
        length = float(np.linalg.norm(step))
        if length == 0 or step[2] <= 0:
            return 0.0
        ok = min(abs(step @ pieces[i].normal), abs(step @ pieces[j].normal)) / length >= max_cos
        return length if ok else 0.0

    lengths = {(i, j): along(i, j) for a, i in enumerate(order) for j in order[a + 1 :]}
    nearest = [min((v for (a, _), v in lengths.items() if a == i and v > 0), default=0.0) for i in order]
    nearest = [v for v in nearest if v > 0]
    if not nearest:  # one piece, or nothing in line: the largest is a disc of unknown level
        best = max(pieces, key=lambda i: pieces[i].volume_mm3)
        out.levels[best], out.confidence[best] = 1, 0.0
        out.notes[best] = "level unknown: no other disc in line with it"
        return out
    typical = float(np.median(nearest))

    def steps(length: float) -> tuple[int, float]:  # (levels the step spans, its confidence)
        ratio = length / typical
        k = int(np.floor(ratio + 0.45))  # halfway (a merged piece's centre) counts the lower level
        if length == 0 or not 1 <= k <= 3 or ratio < 0.55:
            return 0, 0.0
        # Real steps differ by up to ~15 % along one spine: within 0.2 of a whole number is sure,
        # from 0.4 on nothing is (each missed disc costs a little more).
        confidence = float(np.clip((0.4 - abs(ratio - k)) / 0.2, 0.0, 1.0)) * (0.9 ** (k - 1))
        return k, confidence

    # Longest chain from the bottom (most pieces, then most volume): dynamic programming in z order.
    best: dict[int, tuple[int, float, int | None]] = {}
    for j in order:
        best[j] = (1, pieces[j].volume_mm3, None)
        for i in order:
            if i == j or pieces[i].centre[2] >= pieces[j].centre[2]:
                continue
            k, _ = steps(lengths.get((i, j), 0.0))
            if k:
                candidate = (best[i][0] + 1, best[i][1] + pieces[j].volume_mm3, i)
                if candidate[:2] > best[j][:2]:
                    best[j] = candidate
    chain = [max(best, key=lambda j: best[j][:2])]
    while best[chain[-1]][2] is not None:
        chain.append(best[chain[-1]][2])
    chain.reverse()  # bottom first

    # The anchor: the lowest piece of the chain, judged against the discs above it.
    anchor_confidence, note = 1.0, ""
    above = chain[1:] if len(chain) >= 3 else chain
    ref_volume = float(np.median([pieces[i].volume_mm3 for i in above]))
    ref_width = float(np.median([pieces[i].lateral_mm for i in above]))
    ref_height = float(np.median([pieces[i].height_mm for i in above]))
    low = pieces[chain[0]]
    small = low.volume_mm3 < cfg.remnant_volume_fraction * ref_volume
    narrow = low.lateral_mm < cfg.remnant_width_fraction * ref_width
    if len(chain) >= 3 and small and narrow:
        out.dropped[chain[0]] = f"a sacral disc remnant below L5/S1 ({low.volume_mm3 / ref_volume:.0%} of a disc's volume)"
        chain = chain[1:]
        low = pieces[chain[0]]
    if low.volume_mm3 < 0.55 * ref_volume or low.height_mm < 0.55 * ref_height:
        anchor_confidence = 0.3
        note = f"lowest disc {low.volume_mm3 / ref_volume:.0%} of the others' volume, {low.height_mm / ref_height:.0%} of their height: a transitional (sacralised) level or a remnant?"
    elif len(chain) >= 2 and low.sagittal_deg < pieces[chain[1]].sagittal_deg - 5.0:
        anchor_confidence = 0.4
        note = f"lowest disc tilted {low.sagittal_deg:.0f} deg, less than the one above ({pieces[chain[1]].sagittal_deg:.0f} deg): is L5/S1 in the scan?"
    if len(chain) == 1:
        anchor_confidence, note = 0.0, "level unknown: one disc only"

    level, confidence = 1, anchor_confidence
    for a, i in enumerate(chain):
        if a:
            k, step_confidence = steps(lengths[(chain[a - 1], i)])
            level += k
            confidence *= step_confidence
            if step_confidence < 1.0 and not note:
                note = f"step below level {level} is {lengths[(chain[a - 1], i)] / typical:.2f} typical steps"
        out.levels[i], out.confidence[i] = level, round(float(confidence), 3)
        if confidence < cfg.min_level_confidence and note:
            out.notes[i] = f"level uncertain: {note}"
    return out


def _instance(level: int, box, mask: np.ndarray, volume: float, confidence: float = 1.0) -> DiscInstance:
    return DiscInstance(level=level, bbox=tuple(box), mask=mask, volume_mm3=float(volume), level_confidence=float(confidence))


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
