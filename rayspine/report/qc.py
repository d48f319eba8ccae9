"""Quality control a person can look at: which scans need looking at, and a picture of each (no files).

``qc_figure`` draws one scan: its mid-sagittal slice with every disc's outline and level name, and the
axial slice through each disc's centre, each titled with the disc's flags. ``disc_count_warnings`` finds
the scans with more or fewer discs than the archive's usual number, and ``choose_qc_scans`` the scans
worth a picture (the suspicious ones first, then a few per site), so a report over 100,000 scans
draws dozens, not all of them. ``report.html`` writes the pictures; this module only draws them.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import ndimage  # noqa: E402

from ..io.labels import level_name  # noqa: E402
from ..schema import DISC_LABEL_OFFSET, DiscStatus, ScanStatus, is_disc_label  # noqa: E402

MARGIN_MM = 25.0  # around the discs in the sagittal view, around each disc in its axial view
COLOURS = matplotlib.colormaps["tab10"].colors


def disc_name(level: int) -> str:
    """'L4/L5' for level 2; 'level 24' for a level past C2/C3 (a mask with labels beyond the neck)."""
    try:
        return level_name(int(level))
    except ValueError:
        return f"level {level}"


def disc_names(discs: pd.DataFrame) -> pd.Series:
    """Each disc's name: the table's ``level_name`` where it has one (a transitional spine's L6/S1
    keeps its name), else the name of its level in a spine of 5 lumbar and 12 thoracic vertebrae."""
    named = discs["level"].map(disc_name)
    if "level_name" in discs:
        named = discs["level_name"].where(discs["level_name"].notna() & (discs["level_name"] != ""), named)
    return named.astype(str)


def disc_count_warnings(scans: pd.DataFrame) -> tuple[int | None, pd.DataFrame]:
    """The archive's usual number of measured discs per scan (the mode over scored scans) and the
    scored scans that have another number, most different first."""
    ok = scans[scans["status"] == ScanStatus.OK]
    if ok.empty:
        return None, ok
    counts = ok["n_discs"].astype(int)
    expected = int(counts.mode().min())  # the smaller of tied modes: a merged pair is rarer than a missed disc
    odd = ok[counts != expected].assign(expected=expected)
    order = (odd["n_discs"].astype(int) - expected).abs().sort_values(ascending=False, kind="stable").index
    return expected, odd.loc[order]


def flagged_discs(discs: pd.DataFrame) -> pd.DataFrame:
    """Discs with a status other than ok, or an implausible measurement (a ``plausibility`` note)."""
    note = discs["plausibility"] if "plausibility" in discs else pd.Series("", index=discs.index)
    return discs[(discs["status"] != DiscStatus.OK) | (note.fillna("") != "")]


def choose_qc_scans(scans: pd.DataFrame, suspicious: list[str], per_site: int = 2, limit: int = 40) -> list[str]:
    """Scan ids to draw: the ``suspicious`` ones first (in their order), then ``per_site`` scored scans
    of each site; at most ``limit`` suspicious ones, so the pictures stay a handful however big the archive."""
    ok = scans[scans["status"] == ScanStatus.OK]
    chosen = list(dict.fromkeys(s for s in suspicious if s in set(ok["scan_id"])))[:limit]
    for _, site in ok.groupby(ok["site"].fillna(""), sort=True):
        chosen += [s for s in site["scan_id"].head(per_site) if s not in chosen]
    return chosen


def disc_boxes(labels: np.ndarray) -> dict[int, tuple[tuple[slice, ...], np.ndarray]]:
    """Each disc level present in a SPIDER label array -> (its bounding box, its centre in voxels)."""
    levels = np.where(is_disc_label(labels), labels.astype(np.int64) - DISC_LABEL_OFFSET, 0)
    boxes = {}
    for level, box in enumerate(ndimage.find_objects(levels), start=1):
        if box is not None:
            inside = np.argwhere(levels[box] == level)
            boxes[level] = (box, inside.mean(axis=0) + [s.start for s in box])
    return boxes


def _window(values: np.ndarray) -> tuple[float, float]:
    """Display range of an image: its 1st..99th percentile (a few bright voxels do not wash it out)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, [1, 99])
    return float(low), float(high if high > low else low + 1)


def qc_figure(
    image: np.ndarray,
    labels: np.ndarray,
    spacing,
    title: str,
    names: Mapping[int, str] | None = None,
    flags: Mapping[int, str] | None = None,
) -> Figure:
    """One scan's QC picture. ``image`` and ``labels`` are ``[x, y, z]`` on one LPS grid (``labels``
    SPIDER disc labels 200 + level); ``names`` a name per level (default ``disc_name``); ``flags`` a short
    note per level, printed in red on the disc's axial view (its status, e.g. 'possibly_merged').

    Left: the sagittal slice with most disc voxels, anterior left, superior up, each disc outlined in
    its colour and named. Right: the axial slice through each disc's centre, superior disc first,
    patient's right on the left (radiological), anterior up. Distances are in mm on both.
    """
    image = np.asarray(image, dtype=np.float32)
    names, flags = dict(names or {}), dict(flags or {})
    sx, sy, sz = (float(s) for s in spacing)
    boxes = disc_boxes(labels)
    levels = sorted(boxes, reverse=True)  # superior first, as the spine is read
    n = len(levels)
    ncols = 1 if n <= 4 else 2
    nrows = max(1, -(-n // ncols))
    extent = (0, image.shape[1] * sy, 0, image.shape[2] * sz)
    view = [0.0, extent[1], 0.0, extent[3]]  # the discs and a margin, in mm: anterior, posterior, inferior, superior
    if n:
        lo = np.min([[b[1].start * sy, b[2].start * sz] for b, _ in boxes.values()], axis=0) - MARGIN_MM
        hi = np.max([[b[1].stop * sy, b[2].stop * sz] for b, _ in boxes.values()], axis=0) + MARGIN_MM
        view = [max(lo[0], 0), min(hi[0], extent[1]), max(lo[1], 0), min(hi[1], extent[3])]
    height = max(5.0, 1.9 * nrows)
    width = float(np.clip(height * (view[1] - view[0]) / max(view[3] - view[2], 1.0), 2.0, 6.0)) + 0.8  # + the axis labels
    fig = plt.figure(figsize=(width + 2.2 * ncols, height))
    grid = fig.add_gridspec(nrows, 2 + ncols, width_ratios=[width, 0.1, *[2.2] * ncols])
    vmin, vmax = _window(image)

    sagittal = fig.add_subplot(grid[:, 0])
    x = int(np.argmax(is_disc_label(labels).sum(axis=(1, 2)))) if n else image.shape[0] // 2
    sagittal.imshow(image[x].T, cmap="gray", origin="lower", extent=extent, vmin=vmin, vmax=vmax, interpolation="nearest")
    for i, level in enumerate(sorted(boxes)):
        colour = COLOURS[i % len(COLOURS)]
        outline = labels[x].T == DISC_LABEL_OFFSET + level
        if outline.any():
            sagittal.contour(outline, levels=[0.5], colors=[colour], linewidths=1.2, origin="lower", extent=extent)
    sagittal.set_xlim(view[0], view[1])
    sagittal.set_ylim(view[2], view[3])
    left = view[0]
    for i, level in enumerate(sorted(boxes)):  # each name in front of its disc, or at the view's edge
        box, centre = boxes[level]
        anterior = box[1].start * sy - 2.0
        room = anterior - left > 18.0
        sagittal.text(anterior if room else left + 1.0, (centre[2] + 0.5) * sz, names.get(level, disc_name(level)),
                      color=COLOURS[i % len(COLOURS)], fontsize=8, ha="right" if room else "left", va="center",
                      bbox={"facecolor": "black", "alpha": 0.7, "pad": 1.5, "lw": 0})  # fmt: skip
    sagittal.set_title(f"{title}\nsagittal slice {x}", fontsize=9)
    sagittal.set_xlabel("anterior -> posterior (mm)", fontsize=7)
    sagittal.set_ylabel("inferior -> superior (mm)", fontsize=7)
    sagittal.tick_params(labelsize=6)

    for k, level in enumerate(levels):
        ax = fig.add_subplot(grid[k // ncols, 2 + k % ncols])
        box, centre = boxes[level]
        z = int(round(centre[2]))
        extent = (0, image.shape[0] * sx, image.shape[1] * sy, 0)  # rows y (anterior up), columns x (right .. left)
        ax.imshow(image[:, :, z].T, cmap="gray", origin="upper", extent=extent, vmin=vmin, vmax=vmax, interpolation="nearest")
        colour = COLOURS[sorted(boxes).index(level) % len(COLOURS)]
        disc = labels[:, :, z].T == DISC_LABEL_OFFSET + level
        if disc.any():
            ax.contour(disc, levels=[0.5], colors=[colour], linewidths=1.0, origin="upper", extent=extent)
        ax.set_xlim(max(box[0].start * sx - MARGIN_MM, 0), min(box[0].stop * sx + MARGIN_MM, extent[1]))
        ax.set_ylim(min(box[1].stop * sy + MARGIN_MM, extent[2]), max(box[1].start * sy - MARGIN_MM, 0))
        flag = flags.get(level, "")
        ax.set_title(f"{names.get(level, disc_name(level))}, axial {z}" + (f"\n{flag}" if flag else ""),
                     fontsize=7, color="#a00" if flag else "black")  # fmt: skip
        ax.tick_params(labelsize=5)
    if not n:
        sagittal.text(0.5, 0.5, "no disc", transform=sagittal.transAxes, color="red", ha="center")
    fig.tight_layout()
    return fig
