"""``rayspine export``: each scan's disc mask from ``masks.zarr`` as a NIfTI, NRRD or MetaImage file.

Viewers such as ITK-SNAP and 3D Slicer open a mask over its scan only when both share one grid, so each
mask is written on its scan's own grid (size, spacing, origin and direction, kept in the mask group's
``rayspine.grid``), not on the canonical one. Beside the masks go SPIDER's label table as an ITK-SNAP
label description file and a Slicer colour table, so the discs come up named (``L5/S1`` ...).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .labels import spider_label_table
from .scans import write_scan
from .store import read_mask_zarr, write_text_atomic, written_groups

FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha"}
ITKSNAP_LABELS = "spider_labels.itksnap.txt"
SLICER_COLORS = "spider_labels.ctbl"


def export_masks(out: str | Path, fmt: str = "nifti", dest: str | Path | None = None, workers: int | None = None) -> list[Path]:
    """Write every scan of ``out/masks.zarr`` to ``dest`` (default ``out/masks-<fmt>``); returns the files.

    A file appears whole or not at all (``io.scans.write_scan``); exporting again rewrites the files.
    Scans are written in parallel threads (decompression and compression release the GIL).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")
    out = Path(out)
    root = out / "masks.zarr"
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found: export reads the label masks a `rayspine run` writes")
    scans = sorted(written_groups(root))
    dest = Path(dest) if dest is not None else out / f"masks-{fmt}"
    dest.mkdir(parents=True, exist_ok=True)

    def one(scan_id: str) -> Path:
        path = dest / f"{scan_id}{FORMATS[fmt]}"
        write_scan(read_mask_zarr(root, scan_id), path)
        return path

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        written = list(pool.map(one, scans))
    write_text_atomic(itksnap_label_file(), dest / ITKSNAP_LABELS)
    write_text_atomic(slicer_color_table(), dest / SLICER_COLORS)
    return written


def itksnap_label_file() -> str:
    """SPIDER's labels as an ITK-SNAP label description file (Segmentation > Import Label Descriptions)."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# SPIDER labels (van der Graaf et al. 2024), written by rayspine export",
        "# File format:",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "################################################",
        f'{0:5d} {0:5d} {0:4d} {0:4d} {0:8.2f} {0:2d} {0:2d}    "Clear Label"',
    ]
    for e in spider_label_table():
        r, g, b = e.rgb
        lines.append(f'{e.value:5d} {r:5d} {g:4d} {b:4d} {1:8.2f} {1:2d} {1:2d}    "{e.name}"')
    return "\n".join(lines) + "\n"


def slicer_color_table() -> str:
    """SPIDER's labels as a 3D Slicer colour table (``.ctbl``: value, name without spaces, R G B A)."""
    lines = ["# Color table file spider_labels.ctbl", "# SPIDER labels (van der Graaf et al. 2024), written by rayspine export"]
    table = spider_label_table()
    lines.append(f"# {len(table) + 1} values")
    lines.append("0 Background 0 0 0 0")
    for e in table:
        r, g, b = e.rgb
        lines.append(f"{e.value} {e.name.replace(' ', '_')} {r} {g} {b} 255")
    return "\n".join(lines) + "\n"
