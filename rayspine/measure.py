"""``rayspine measure``: disc instances, crops and geometry from existing masks (e.g. ground truth).

Three layers, so the streaming pipeline can reuse the first two:
* ``measure_mask``: pure, one mask in memory -> ``MeasuredScan`` (rows, crops, levels, status);
* ``write_scan_outputs``: one scan's crops and table parts into an output folder (the ``scans`` part is
  written last and marks the scan complete, so an interrupted run redoes only unfinished scans);
* ``run_measure``: index an archive, one Ray task per scan, consolidate the tables, join the gradings.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from .config import Config
from .discs import crop_disc, disc_instances, looks_binary, worst_status
from .geometry import measure_disc
from .io.archive import index_archive, narrowing_labels, read_gradings
from .io.scans import ScanError, read_scan
from .io.store import (
    completed_parts,
    consolidate_parts,
    part_path,
    write_crops_zarr,
    write_json_atomic,
    write_parquet_atomic,
)
from .preprocess import to_canonical_orientation
from .schema import GEOMETRY_COLUMNS, LABEL_COLUMN, SCANS_SCHEMA, DiscStatus, ScanStatus, disc_label, discs_schema
from .volume import IDENTITY, Volume

log = logging.getLogger(__name__)

MARKER = "measure.json"  # names an output folder as ours, with the config it was made with
OUTPUTS = ("parts", "crops.zarr", "discs.parquet", "scans.parquet", MARKER)


@dataclass
class MeasuredScan:
    rows: list[dict]  # one per disc: level, status, message, GEOMETRY_COLUMNS, crop_index (-1: no crop)
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
        row = {"level": disc.level, "status": disc.status, "message": disc.message, **{k: math.nan for k in GEOMETRY_COLUMNS}, "crop_index": -1}
        if disc.mask is not None:
            row.update(measure_disc(disc.mask, spacing, oriented.direction))
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


# --- one scan's outputs ---------------------------------------------------------------------------
def part_key(scan: dict) -> str:
    """The file name of a scan's parts: its id, or for an unusable id a stable key from its path."""
    if scan.get("status", ScanStatus.OK) == ScanStatus.BAD_ID:
        return "bad-id-" + hashlib.sha1(str(scan.get("image_path") or scan.get("mask_path") or scan["scan_id"]).encode()).hexdigest()[:16]
    return scan["scan_id"]


def write_scan_outputs(out: Path, scan: dict, measured: MeasuredScan | None, seconds: dict | None = None) -> None:
    """Write one scan's crops (``crops.zarr/<scan_id>``), its disc rows and then its scan row (parts).

    ``scan`` holds ``scan_id, patient_id, site`` and optionally ``mask_path``, ``status``, ``message``
    (used when ``measured`` is None: a scan that could not be read). ``disc_narrowing`` is joined later,
    at consolidation, so a re-run with other gradings needs no re-measuring.
    """
    out = Path(out)
    key = part_key(scan)
    ids = {"scan_id": scan["scan_id"], "patient_id": scan.get("patient_id"), "site": scan.get("site")}
    rows = measured.rows if measured is not None else []
    if measured is not None and len(measured.crops):
        write_crops_zarr(out / "crops.zarr", key, measured.crops, measured.levels)
    schema = discs_schema()
    discs = pa.Table.from_pylist([{**ids, **r} for r in rows], schema=schema) if rows else schema.empty_table()
    write_parquet_atomic(discs, part_path(out, "discs", key))
    row = {
        **ids,
        "path": scan.get("mask_path"),
        "status": measured.status if measured is not None else scan["status"],
        "message": measured.message if measured is not None else scan.get("message", ""),
        "n_discs": sum(1 for r in rows if not math.isnan(r["volume_mm3"])),
        **(seconds or {}),
    }
    write_parquet_atomic(pa.Table.from_pylist([row], schema=SCANS_SCHEMA), part_path(out, "scans", key))


def measure_scan(scan: dict, out: str | Path, cfg: Config) -> dict:
    """Read one mask file, measure it, write its outputs. Bad input becomes the scan's status."""
    started = time.perf_counter()
    try:
        volume = read_scan(scan["mask_path"], cfg.limits, check_voxels=False)
    except ScanError as err:
        write_scan_outputs(Path(out), {**scan, "status": err.status, "message": err.reason}, None)
        return {"scan_id": scan["scan_id"], "status": err.status, "n_discs": 0}
    loaded = time.perf_counter()
    binary = looks_binary(volume.voxels)  # a 0/1 mask is a prediction, not SPIDER labels
    measured = measure_mask(volume, cfg, binary=binary)
    seconds = {"seconds_load": loaded - started, "seconds_measure": time.perf_counter() - loaded}
    write_scan_outputs(Path(out), scan, measured, seconds)
    return {"scan_id": scan["scan_id"], "status": measured.status, "n_discs": len(measured.levels)}


# --- the command ----------------------------------------------------------------------------------
def run_measure(masks_root: Path, out: Path, cfg: Config = Config(), labels: Path | None = None, overwrite: bool = False, log_every: int = 20) -> pd.DataFrame:
    """Measure every mask of a SPIDER archive (``masks/``) or a folder of masks; returns the discs table.

    One Ray task per scan. Re-running resumes (scans whose ``scans`` part exists are skipped);
    ``overwrite`` starts afresh. A non-empty ``out`` that is not a previous measure output is refused.
    """
    masks_root, out = Path(masks_root), Path(out)
    _prepare_out(out, cfg, overwrite)
    index = index_archive(masks_root, use="masks")
    scans = [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in index.to_dict("records")]
    done = completed_parts(out, "scans")
    for scan in scans:  # unusable ids and missing files need no task
        if scan["status"] != ScanStatus.OK and part_key(scan) not in done:
            write_scan_outputs(out, scan, None)
    todo = [s for s in scans if s["status"] == ScanStatus.OK and part_key(s) not in done]
    log.info("measure: %d scans, %d done before, %d to do", len(scans), len(scans) - len(todo), len(todo))
    if todo:
        _run_tasks(todo, out, cfg, log_every)
    consolidate_parts(out, "scans", SCANS_SCHEMA)
    discs = consolidate_parts(out, "discs", discs_schema(metadata={"config": cfg.digest()})).to_pandas()
    gradings = _gradings_path(masks_root, labels)
    if gradings is not None:
        discs = join_narrowing(discs, narrowing_labels(read_gradings(gradings)))
        schema = discs_schema(metadata={"config": cfg.digest(), "labels": str(gradings)})
        table = pa.Table.from_pandas(discs, schema=schema, preserve_index=False).replace_schema_metadata(schema.metadata)
        write_parquet_atomic(table, out / "discs.parquet")
    return discs


def _run_tasks(todo: list[dict], out: Path, cfg: Config, log_every: int) -> None:
    import ray

    from .runtime import init_ray

    init_ray()  # no-op when the CLI (or a cluster job) already connected
    task = ray.remote(num_cpus=1)(measure_scan)
    pending = [task.remote(scan, str(out), cfg) for scan in todo]
    finished, started = 0, time.perf_counter()
    while pending:
        ready, pending = ray.wait(pending, num_returns=min(len(pending), 8), timeout=30)
        for result in ray.get(ready):  # an infrastructure failure raises here, loudly
            finished += 1
            if finished % log_every == 0 or finished == len(todo):
                log.info("measure: %d/%d scans (%.1f s), last %s: %s", finished, len(todo), time.perf_counter() - started, result["scan_id"], result["status"])


def _prepare_out(out: Path, cfg: Config, overwrite: bool) -> None:
    marker = out / MARKER
    if overwrite:
        for name in OUTPUTS:  # only our own outputs: never wipe a folder we did not write
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    elif out.exists() and any(out.iterdir()):
        if not marker.exists():
            raise FileExistsError(f"{out} is not empty and not a previous `measure` output; use --overwrite or another folder")
        import json

        previous = json.loads(marker.read_text()).get("config")
        if previous != cfg.digest():
            raise FileExistsError(f"{out} was measured with another config ({previous}); use --overwrite to start again")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"command": "measure", "config": cfg.digest(), "settings": cfg.to_dict()}, marker)


def _gradings_path(masks_root: Path, labels: Path | None) -> Path | None:
    if labels is not None:
        return Path(labels)
    default = masks_root / "radiological_gradings.csv"
    return default if default.exists() else None


def join_narrowing(discs: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Fill ``disc_narrowing`` from ``patient_id, level, disc_narrowing`` rows (missing -> null)."""
    labels = labels[["patient_id", "level", LABEL_COLUMN]].astype({"patient_id": str, "level": int})
    merged = discs.drop(columns=[LABEL_COLUMN]).merge(labels, on=["patient_id", "level"], how="left", validate="many_to_one")
    merged[LABEL_COLUMN] = merged[LABEL_COLUMN].astype("Int8")
    return merged[list(discs.columns)]
