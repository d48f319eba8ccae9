"""Archive indexes: the SPIDER layout and plain folders of scans; SPIDER's overview CSV.

An index is a DataFrame with one row per scan: ``scan_id, patient_id, site, image_path, mask_path,
status, message``. Scans whose id cannot be a storage key (duplicates, path tricks) are kept in the
index with status ``bad_id`` so they are reported, not silently dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..schema import ScanStatus
from .scans import SCAN_SUFFIXES, is_scan_path, scan_stem

INDEX_COLUMNS = ["scan_id", "patient_id", "site", "image_path", "mask_path", "status", "message"]
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_spider_archive(root: str | Path) -> bool:
    """``images/`` present, or ``masks/`` alone: a plain folder of scans may also hold a ``masks/`` folder."""
    root = Path(root)
    if (root / "images").is_dir():
        return True
    return (root / "masks").is_dir() and not any(is_scan_path(p) for p in root.iterdir())


def patient_of(scan_id: str) -> str:
    """SPIDER's scan ids are ``<patient>_<series>``; elsewhere the leading number, else the id."""
    match = re.match(r"^(\d+)", scan_id)
    return match.group(1) if match else scan_id


def index_archive(root: str | Path, use: str = "images") -> pd.DataFrame:
    """Index an archive. ``use="images"`` pairs images with masks; ``use="masks"`` indexes masks alone.

    A SPIDER archive is read from ``images/`` and ``masks/``; any other folder is taken as a folder of
    scans (or masks) with an optional ``masks/`` folder of same-named masks inside it.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"archive folder not found: {root}")
    spider = is_spider_archive(root)
    scan_dir = root / use if spider else root
    mask_dir = root / "masks"
    rows = []
    for path in _scan_entries(scan_dir):
        scan_id = scan_stem(path)
        mask = mask_dir / path.name if use == "images" else path
        rows.append(
            {
                "scan_id": scan_id,
                "patient_id": patient_of(scan_id),
                "image_path": str(path) if use == "images" else None,
                "mask_path": str(mask) if (mask.exists() or mask.is_symlink()) else None,
            }
        )
    index = pd.DataFrame(rows, columns=["scan_id", "patient_id", "image_path", "mask_path"])
    index["site"] = _sites(root, index["scan_id"]) if len(index) else []
    index["status"], index["message"] = _id_problems(index["scan_id"])
    return index[INDEX_COLUMNS].sort_values("scan_id", kind="stable").reset_index(drop=True)


def _scan_entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(folder.iterdir()):
        if path.name == "masks":
            continue
        # "..mha" (id ".") gets its row, a bad id, instead of vanishing as a hidden file.
        if is_scan_path(path) or _dot_named_scan(path) or (path.is_symlink() and not path.exists() and not path.name.startswith(".")):
            entries.append(path)
        elif path.is_dir() and not path.name.startswith(".") and any(p.suffix.lower() == ".dcm" for p in path.iterdir()):
            entries.append(path)  # a DICOM series folder
    return entries


def _dot_named_scan(path: Path) -> bool:
    """``..mha``, ``...mha``: not hidden files (``.x.mha``, skipped) but scans whose id is only dots."""
    return path.is_file() and path.name.lower().endswith(SCAN_SUFFIXES) and not scan_stem(path).strip(".")


def _id_problems(scan_ids: pd.Series) -> tuple[list[str], list[str]]:
    duplicated = scan_ids.duplicated(keep=False)
    statuses, messages = [], []
    for scan_id, dup in zip(scan_ids, duplicated):
        if not SAFE_ID.match(scan_id) or ".." in scan_id:
            statuses.append(ScanStatus.BAD_ID)
            messages.append(f"scan id {scan_id!r} is not a safe storage key (letters, digits, . _ - only)")
        elif dup:
            statuses.append(ScanStatus.BAD_ID)
            messages.append(f"scan id {scan_id!r} is shared by several files; rename them to be scored")
        else:
            statuses.append(ScanStatus.OK)
            messages.append("")
    return statuses, messages


def _sites(root: Path, scan_ids: pd.Series) -> list[str]:
    """Site of each scan from overview.csv: a ``site`` column when present, else the scanner model."""
    overview_path = root / "overview.csv"
    if not overview_path.exists():
        return ["unknown"] * len(scan_ids)
    overview = read_overview(overview_path).set_index("new_file_name")
    if "site" in overview:
        site = overview["site"].astype(str)
    else:
        site = (
            overview["Manufacturer"].astype(str).str.strip()
            + " "
            + overview["ManufacturerModelName"].astype(str).str.strip()
            + " "
            + overview["MagneticFieldStrength"].astype(str)
            + "T"
        )
    return [site.get(s, "unknown") for s in scan_ids]


def read_overview(path: str | Path) -> pd.DataFrame:
    overview = pd.read_csv(path)
    if "new_file_name" not in overview:
        raise ValueError(f"{path}: not a SPIDER overview.csv (no 'new_file_name' column)")
    overview["sex"] = overview["sex"].astype(str).str.strip() if "sex" in overview else None
    return overview
