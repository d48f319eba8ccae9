"""Archive indexes: SPIDER, BIDS, SPINEPS and TotalSpineSeg output folders, plain folders; SPIDER's overview CSV.

An index is a DataFrame with one row per scan: ``scan_id, patient_id, site, series, image_path,
mask_path, status, message``. Scans whose id cannot be a storage key (duplicates, path tricks) are kept
in the index with status ``bad_id`` so they are reported, not silently dropped.

Layouts (``archive_layout``), each checked against the tool's own documentation or code:

- ``spider``: ``images/`` and ``masks/`` of same-named files, ``overview.csv`` (SPIDER, van der Graaf 2024).
- ``bids``: raw data ``sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_...]_T1w|T2w.nii[.gz]``, at
  the root or under ``rawdata/`` (BIDS 1.9, "Anatomy imaging data"); patient = subject; site from
  ``sub-<label>/sub-<label>_sessions.tsv`` or ``participants.tsv`` (a ``site``, ``institution`` or ``center``
  column) or the image's JSON sidecar (``InstitutionName``, else the scanner). Masks: SPINEPS ``seg-vert``
  instance masks under a ``derivatives*`` folder (default ``derivatives_seg``), named like the image with
  ``mod-<suffix>_seg-vert_msk``: spineps ``seg_run.py::output_paths_from_input`` (out_vert:
  ``bids_format="msk", info={"seg": "vert", "mod": img_ref.format}``, parent = the derivatives folder) and
  README.md "Dataset" at commit 60cc736627005ab3ebe4acd98e5b318108ae2360. ``spineps sample`` writes the
  derivatives folder next to a single image: a folder of ``sub-*`` images with such a folder is read the same.
- ``totalspineseg``: an output folder of ``totalspineseg INPUT OUTPUT``: final masks ``step2_output/<name>.nii.gz``
  and the images it was given ``input/<name>_0000.nii.gz`` (neuropoly/totalspineseg README.md "Output Data
  Structure" and ``totalspineseg/inference.py``, commit ddab04b1a7a488abca2374e20752f51997280ee3).
- ``folder``: any other folder of scans (or masks), with an optional ``masks/`` folder of same-named masks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from ..schema import ScanStatus
from .scans import SCAN_SUFFIXES, is_scan_path, scan_stem

INDEX_COLUMNS = ["scan_id", "patient_id", "site", "series", "image_path", "mask_path", "status", "message"]
LAYOUTS = ("spider", "bids", "totalspineseg", "folder")
BIDS_IMAGE = re.compile(r"^(sub-[A-Za-z0-9]+(?:_[A-Za-z]+-[A-Za-z0-9]+)*)_(T1w|T2w)\.nii(\.gz)?$")
SPINEPS_MASK = re.compile(r"^(sub-[A-Za-z0-9]+(?:_[A-Za-z]+-[A-Za-z0-9]+)*)_msk\.nii(\.gz)?$")
SITE_COLUMNS = ("site", "institution", "center", "centre")
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


def archive_layout(root: str | Path) -> str:
    """Which of ``LAYOUTS`` a folder is (see the module docstring)."""
    root = Path(root)
    if is_spider_archive(root):
        return "spider"
    if (root / "step2_output").is_dir():
        return "totalspineseg"
    if _bids_images(root) or _spineps_masks(root):
        return "bids"
    return "folder"


def index_archive(root: str | Path, use: str = "images") -> pd.DataFrame:
    """Index an archive. ``use="images"`` pairs images with masks; ``use="masks"`` indexes masks alone.

    The layout is recognised by ``archive_layout``: SPIDER (``images/`` and ``masks/``), BIDS raw data with
    SPINEPS derivatives, a TotalSpineSeg output folder, or any other folder of scans (or masks) with an
    optional ``masks/`` folder of same-named masks inside it.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"archive folder not found: {root}")
    layout = archive_layout(root)
    if layout == "bids":
        rows = _bids_rows(root, use)
    elif layout == "totalspineseg":
        rows = _totalspineseg_rows(root, use)
    else:
        rows = _folder_rows(root, use, spider=layout == "spider")
    index = pd.DataFrame(rows, columns=["scan_id", "patient_id", "series", "image_path", "mask_path", "site"])
    if layout in ("spider", "folder"):
        index["site"] = _sites(root, index["scan_id"]) if len(index) else []
    index["status"], index["message"] = _id_problems(index["scan_id"])
    return index[INDEX_COLUMNS].sort_values("scan_id", kind="stable").reset_index(drop=True)


def _folder_rows(root: Path, use: str, spider: bool) -> list[dict]:
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
                "series": series_of(scan_id),
                "image_path": str(path) if use == "images" else None,
                "mask_path": str(mask) if (mask.exists() or mask.is_symlink()) else None,
            }
        )
    return rows


def series_of(scan_id: str) -> str:
    """SPIDER's ``<patient>_<series>`` ids: the series (``t1``, ``t2``, ``t2_SPACE``); else ''."""
    match = re.match(r"^\d+_(.+)$", scan_id)
    return match.group(1) if match else ""


# --- BIDS and SPINEPS ----------------------------------------------------------------------------
def _entities(stem: str) -> dict[str, str]:
    """``sub-01_ses-2_acq-sag`` -> {'sub': '01', 'ses': '2', 'acq': 'sag'}."""
    return dict(part.split("-", 1) for part in stem.split("_"))


def _bids_images(root: Path) -> list[Path]:
    found = []
    for base in (root, root / "rawdata"):
        found += [p for p in base.glob("sub-*/anat/*") if BIDS_IMAGE.match(p.name)]
        found += [p for p in base.glob("sub-*/ses-*/anat/*") if BIDS_IMAGE.match(p.name)]
        found += [p for p in base.glob("sub-*") if p.is_file() and BIDS_IMAGE.match(p.name)]  # spineps sample
    return sorted(set(found))


def _spineps_masks(root: Path) -> list[Path]:
    """SPINEPS's vertebra instance masks (``*_seg-vert_msk.nii.gz``) in any ``derivatives*`` folder."""
    masks = []
    for der in sorted(p for p in root.glob("derivatives*") if p.is_dir()):
        for path in der.rglob("*_msk.nii*"):
            match = SPINEPS_MASK.match(path.name)
            if match and _entities(match.group(1)).get("seg") == "vert":
                masks.append(path)
    return sorted(masks)


def _image_key(path: Path) -> tuple[str, frozenset]:
    stem, suffix = BIDS_IMAGE.match(path.name).group(1, 2)
    return f"{stem}_{suffix}", frozenset({**_entities(stem), "mod": suffix}.items())


def _mask_key(path: Path) -> tuple[str, frozenset]:
    entities = _entities(SPINEPS_MASK.match(path.name).group(1))
    entities.pop("seg")
    mod = entities.pop("mod", "T2w")
    stem = "_".join(f"{k}-{v}" for k, v in entities.items())
    return f"{stem}_{mod}", frozenset({**entities, "mod": mod}.items())


def _bids_rows(root: Path, use: str) -> list[dict]:
    images = {_image_key(p)[1]: p for p in _bids_images(root)}
    masks = {_mask_key(p)[1]: p for p in _spineps_masks(root)}
    keys = images if use == "images" else masks
    sites = _bids_sites(root)
    rows = []
    for key, path in keys.items():
        scan_id = (_image_key if use == "images" else _mask_key)(path)[0]
        entities = dict(key)
        image = images.get(key)
        mask = masks.get(key)
        if mask is None and image is not None and (root / "masks" / image.name).is_file():
            mask = root / "masks" / image.name  # a plain folder of BIDS-named scans with a masks/ folder
        rows.append(
            {
                "scan_id": scan_id,
                "patient_id": f"sub-{entities['sub']}",
                "series": "_".join([*(f"{k}-{v}" for k, v in sorted(entities.items()) if k in ("acq", "rec", "run")), entities["mod"]]),
                "image_path": str(image) if image is not None and use == "images" else None,
                "mask_path": str(mask) if mask is not None else None,
                "site": _bids_site(sites, entities, image),
            }
        )
    return rows


def _site_column(table: pd.DataFrame) -> str | None:
    return next((c for c in table.columns if c.lower() in SITE_COLUMNS), None)


def _bids_sites(root: Path) -> dict:
    """(subject, session or None) -> site, from the sessions tables and ``participants.tsv``."""
    sites = {}
    for base in (root, root / "rawdata"):
        participants = base / "participants.tsv"
        if participants.is_file():
            table = pd.read_csv(participants, sep="\t", dtype=str)
            column = _site_column(table)
            if column and "participant_id" in table:
                sites.update({(pid, None): site for pid, site in zip(table["participant_id"], table[column]) if isinstance(site, str)})
        for sessions in base.glob("sub-*/sub-*_sessions.tsv"):
            table = pd.read_csv(sessions, sep="\t", dtype=str)
            column = _site_column(table)
            if column and "session_id" in table:
                subject = sessions.parent.name
                sites.update({(subject, ses): site for ses, site in zip(table["session_id"], table[column]) if isinstance(site, str)})
    return sites


def _bids_site(sites: dict, entities: dict, image: Path | None) -> str:
    subject = f"sub-{entities['sub']}"
    session = f"ses-{entities['ses']}" if "ses" in entities else None
    if (subject, session) in sites:
        return sites[(subject, session)]
    if (subject, None) in sites:
        return sites[(subject, None)]
    sidecar = image.with_name(re.sub(r"\.nii(\.gz)?$", ".json", image.name)) if image is not None else None
    if sidecar is not None and sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("InstitutionName"):
            return str(meta["InstitutionName"]).strip()
        scanner = [str(meta[k]).strip() for k in ("Manufacturer", "ManufacturerModelName") if meta.get(k)]
        if scanner:
            field = f" {meta['MagneticFieldStrength']}T" if meta.get("MagneticFieldStrength") else ""
            return " ".join(scanner) + field
    return "unknown"


# --- TotalSpineSeg -------------------------------------------------------------------------------
def _totalspineseg_rows(root: Path, use: str) -> list[dict]:
    rows = []
    for mask in sorted(p for p in (root / "step2_output").iterdir() if is_scan_path(p)):
        scan_id = scan_stem(mask)
        image = root / "input" / f"{scan_id}_0000.nii.gz"
        bids = BIDS_IMAGE.match(mask.name)
        rows.append(
            {
                "scan_id": scan_id,
                "patient_id": f"sub-{_entities(bids.group(1))['sub']}" if bids else patient_of(scan_id),
                "series": bids.group(2) if bids else series_of(scan_id),
                "image_path": str(image) if use == "images" and image.is_file() else None,
                "mask_path": str(mask),
                "site": "unknown",
            }
        )
    return rows


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


def describe_index(index: pd.DataFrame, layout: str = "") -> str:
    """What ``rayspine index`` prints: counts of scans, masks, patients, sites, series and statuses, and the problems."""

    def counts(column: str) -> str:
        values = index[column].fillna("").replace("", "(none)").value_counts()
        return ", ".join(f"{k} {v}" for k, v in sorted(values.items(), key=lambda kv: (-kv[1], kv[0])))

    lines = [
        f"layout   : {layout or 'unknown'}",
        f"scans    : {len(index)} ({int(index['image_path'].notna().sum())} with an image, {int(index['mask_path'].notna().sum())} with a mask)",
        f"patients : {index['patient_id'].nunique()}",
        f"sites    : {index['site'].nunique()} ({counts('site')})" if len(index) else "sites    : 0",
        f"series   : {counts('series')}" if len(index) else "series   : -",
        f"statuses : {counts('status')}" if len(index) else "statuses : -",
    ]
    for row in index[index["status"] != ScanStatus.OK].head(20).itertuples():
        lines.append(f"  ! {row.scan_id}: {row.status}: {row.message}")
    return "\n".join(lines)
