"""``rayspine measure``: disc instances, crops and geometry from existing masks (e.g. ground truth).

One Ray task per block of masks: read, ``measure_mask``, write the crops (``crops.zarr/<key>``) and
then the block's table parts (``io.outputs``, the same parts and tables as ``run``). An exception
while measuring one mask is that scan's ``error`` row, not the end of the run. An interrupted run
redoes only the unfinished scans (failed ones too with ``retry_failed``); the tables are consolidated
and the narrowing grades joined at the end.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pandas as pd

from ..config import Config
from ..io.archive import index_archive
from ..io.gradings import load_narrowing
from ..io.outputs import claim_output, done_keys, failure, finish_tables, new_attempt, part_key, write_block_parts
from ..io.scans import ScanError, read_scan
from ..io.store import write_crops_zarr
from ..schema import ScanStatus
from .instances import looks_binary
from .scan import measure_mask, measured_count

log = logging.getLogger(__name__)


def measure_scan(scan: dict, out: str | Path, cfg: Config, fail_at: dict | None = None) -> dict:
    """Read one mask file, measure it, write its crops; returns its table values (``io.outputs``).

    Bad input becomes the scan's status; any other exception its ``error`` row with the stage.
    ``fail_at`` ({stage: scan_id}) raises on purpose, for the fault tests.
    """
    started = time.perf_counter()
    scan = {**scan, "path": scan.get("mask_path"), "disc_rows": [], "n_discs": 0}
    stage = "load"
    try:
        _inject(fail_at, stage, scan["scan_id"])
        volume = read_scan(scan["mask_path"], cfg.limits, check_voxels=False)
        loaded = time.perf_counter()
        stage = "measure"
        _inject(fail_at, stage, scan["scan_id"])
        measured = measure_mask(volume, cfg, binary=looks_binary(volume.voxels))  # a 0/1 mask is a prediction
        stage = "store"
        _inject(fail_at, stage, scan["scan_id"])
        if len(measured.crops):
            write_crops_zarr(Path(out) / "crops.zarr", part_key(scan), measured.crops, measured.levels)
    except ScanError as err:
        return {**scan, "status": err.status, "message": err.reason, "seconds_load": time.perf_counter() - started}
    except Exception as err:  # noqa: BLE001 - one mask's failure is its row, not the run's end
        return {**scan, **failure(stage, err), "seconds_load": time.perf_counter() - started}
    return {
        **scan,
        "status": measured.status,
        "message": measured.message,
        "n_discs": measured_count(measured.rows),
        "disc_rows": measured.rows,
        "seconds_load": loaded - started,
        "seconds_measure": time.perf_counter() - loaded,
    }


def measure_block(scans: list[dict], out: str, cfg: Config, attempt: int, fail_at: dict | None = None) -> list[tuple[str, str]]:
    """A Ray task's work: measure a block of masks, write their rows as one part; returns (scan_id, status)s."""
    rows = [measure_scan(scan, out, cfg, fail_at) for scan in scans]
    write_block_parts(Path(out), rows, attempt)
    return [(row["scan_id"], row["status"]) for row in rows]


def run_measure(
    masks_root: Path,
    out: Path,
    cfg: Config = Config(),
    labels: Path | None = None,
    overwrite: bool = False,
    retry_failed: bool = False,
    fail_at: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Measure every mask of a SPIDER archive (``masks/``) or a folder of masks; returns the discs table.

    Re-running resumes (scans with a row are skipped; failed ones are measured again with
    ``retry_failed``); ``overwrite`` starts afresh. A non-empty ``out`` that is not a previous measure
    output is refused.
    """
    masks_root, out = Path(masks_root), Path(out)
    claim_output(out, "measure", cfg, overwrite, masks=str(masks_root))
    attempt = new_attempt()
    index = index_archive(masks_root, use="masks")
    scans = [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in index.to_dict("records")]
    done = done_keys(out, retry_failed)
    pending = [s for s in scans if part_key(s) not in done]
    failed = [{**s, "path": s.get("mask_path"), "n_discs": 0} for s in pending if s["status"] != ScanStatus.OK]
    if failed:  # unusable ids and missing files need no task: one part for all of them
        write_block_parts(out, failed, attempt)
    todo = [s for s in pending if s["status"] == ScanStatus.OK]
    log.info("measure: %d scans, %d done before, %d to do", len(scans), len(scans) - len(pending), len(todo))
    if todo:
        _run_tasks(todo, out, cfg, attempt, fail_at)
    gradings = Path(labels) if labels is not None else masks_root / "radiological_gradings.csv"
    metadata = {"config": cfg.digest(), "labels": str(gradings) if gradings.is_file() else ""}
    _, discs = finish_tables(out, 0, metadata, load_narrowing(gradings))
    return discs


def _run_tasks(todo: list[dict], out: Path, cfg: Config, attempt: int, fail_at: dict | None) -> None:
    import ray

    from ..pipeline.progress import Progress
    from ..runtime import init_ray

    init_ray()  # no-op when the CLI (or a cluster job) already connected
    cpus = max(1.0, ray.cluster_resources().get("CPU", 1.0))
    size = max(1, min(cfg.pipeline.block_scans, math.ceil(len(todo) / (4 * cpus))))  # a few blocks per CPU
    task = ray.remote(num_cpus=1, memory=cfg.pipeline.task_memory_mb * 2**20)(measure_block)
    pending = [task.remote(todo[i : i + size], str(out), cfg, attempt, fail_at) for i in range(0, len(todo), size)]
    progress = Progress(len(todo), what="masks")
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=10)
        for statuses in ray.get(ready):  # an infrastructure failure raises here, loudly
            for scan_id, status in statuses:
                progress.add(scan_id, status)
        progress.show()
    progress.close()


def _inject(fail_at: dict | None, stage: str, scan_id: str) -> None:
    if fail_at and fail_at.get(stage) == scan_id:
        raise RuntimeError(f"injected at {stage} for {scan_id}")
