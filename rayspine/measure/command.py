"""``rayspine measure``: disc instances, crops and geometry from existing masks (e.g. ground truth).

One Ray task per mask file: read, ``measure_mask``, write the crops (``crops.zarr/<key>``) and the
scan's table parts (``io.outputs``). An interrupted run redoes only the unfinished scans; the tables
are consolidated and the narrowing grades joined at the end.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd

from ..config import Config
from ..io.archive import archive_layout, describe_index, index_archive
from ..io.gradings import load_narrowing
from ..io.labels import SCHEMES
from ..io.outputs import claim_output, done_keys, finish_tables, part_key, write_scan_parts
from ..io.scans import ScanError, read_scan
from ..io.store import refresh_root_group, write_crops_zarr
from ..schema import ScanStatus
from .instances import looks_binary
from .scan import measure_mask, measured_count

log = logging.getLogger(__name__)


def measure_scan(scan: dict, out: str | Path, cfg: Config, scheme: str | None = None) -> dict:
    """Read one mask file, measure it, write its outputs. Bad input (labels that do not fit ``scheme``
    included) becomes the scan's status."""
    started = time.perf_counter()
    scan = {**scan, "path": scan.get("mask_path")}
    try:
        volume = read_scan(scan["mask_path"], cfg.limits, check_voxels=False)
    except ScanError as err:
        write_scan_parts(Path(out), {**scan, "status": err.status, "message": err.reason}, [])
        return {"scan_id": scan["scan_id"], "status": err.status, "n_discs": 0}
    loaded = time.perf_counter()
    binary = scheme is None and looks_binary(volume.voxels)  # by default a 0/1 mask is a prediction
    measured = measure_mask(volume, cfg, binary=binary, scheme=scheme)
    if len(measured.crops):
        write_crops_zarr(Path(out) / "crops.zarr", part_key(scan), measured.crops, measured.levels)
    row = {
        **scan,
        "status": measured.status,
        "message": measured.message,
        "n_discs": measured_count(measured.rows),
        "seconds_load": loaded - started,
        "seconds_measure": time.perf_counter() - loaded,
    }
    write_scan_parts(Path(out), row, measured.rows)
    return {"scan_id": scan["scan_id"], "status": measured.status, "n_discs": len(measured.levels)}


def run_measure(
    masks_root: Path, out: Path, cfg: Config = Config(), labels: Path | None = None, overwrite: bool = False, log_every: int = 20, scheme: str | None = None
) -> pd.DataFrame:
    """Measure every mask of an archive (``io.archive.index_archive``'s layouts); returns the discs table.

    ``labels`` is the gradings CSV; ``scheme`` the masks' label scheme (``io.labels``; None: SPIDER labels,
    or binary for 0/1 masks). One Ray task per scan. Re-running resumes (scans whose ``scans`` part exists
    are skipped); ``overwrite`` starts afresh. A non-empty ``out`` that is not a previous measure output
    with the same config and scheme is refused.
    """
    masks_root, out = Path(masks_root), Path(out)
    if scheme is not None and scheme != "auto" and scheme not in SCHEMES:
        raise ValueError(f"unknown label scheme {scheme!r}: one of {', '.join(SCHEMES)} or 'auto'")
    marker = out / "measure.json"
    if not overwrite and marker.is_file() and json.loads(marker.read_text()).get("label_scheme") != scheme:
        previous = json.loads(marker.read_text()).get("label_scheme")
        raise FileExistsError(f"{out} was measured with label scheme {previous!r}, not {scheme!r}; use --overwrite to start again")
    claim_output(out, "measure", cfg, overwrite, masks=str(masks_root), label_scheme=scheme)
    index = index_archive(masks_root, use="masks")
    log.info("measure: %s\n%s", masks_root, describe_index(index, archive_layout(masks_root)))
    scans = [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in index.to_dict("records")]
    done = done_keys(out)
    for scan in scans:  # unusable ids and missing files need no task
        if scan["status"] != ScanStatus.OK and part_key(scan) not in done:
            write_scan_parts(out, {**scan, "path": scan.get("mask_path")}, [])
    todo = [s for s in scans if s["status"] == ScanStatus.OK and part_key(s) not in done]
    log.info("measure: %d scans, %d done before, %d to do", len(scans), len(scans) - len(todo), len(todo))
    if todo:
        _run_tasks(todo, out, cfg, log_every, scheme)
    gradings = Path(labels) if labels is not None else masks_root / "radiological_gradings.csv"
    metadata = {"config": cfg.digest(), "labels": str(gradings) if gradings.is_file() else ""}
    _, discs = finish_tables(out, 0, metadata, load_narrowing(gradings), cfg.discs.join_threshold())
    refresh_root_group(out / "crops.zarr")
    return discs


def _run_tasks(todo: list[dict], out: Path, cfg: Config, log_every: int, scheme: str | None) -> None:
    import ray

    from ..runtime import init_ray

    init_ray()  # no-op when the CLI (or a cluster job) already connected
    task = ray.remote(num_cpus=1)(measure_scan)
    pending = [task.remote(scan, str(out), cfg, scheme) for scan in todo]
    finished, started = 0, time.perf_counter()
    while pending:
        ready, pending = ray.wait(pending, num_returns=min(len(pending), 8), timeout=30)
        for result in ray.get(ready):  # an infrastructure failure raises here, loudly
            finished += 1
            if finished % log_every == 0 or finished == len(todo):
                log.info("measure: %d/%d scans (%.1f s), last %s: %s", finished, len(todo), time.perf_counter() - started, result["scan_id"], result["status"])
