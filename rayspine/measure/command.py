"""``rayspine measure``: disc instances, crops and geometry from existing masks (e.g. ground truth).

One Ray task per block of masks: read, ``measure_mask``, write the block's crops as one group
(``crops.zarr/<attempt>-<hash>``) and then the block's table parts (``io.outputs``, the same parts and tables as ``run``). An exception
while measuring one mask is that scan's ``error`` row, not the end of the run. An interrupted run
redoes only the unfinished scans (failed ones too with ``retry_failed``); the tables are consolidated
and the narrowing grades joined at the end.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd

from ..config import Config
from ..errors import inject_fault
from ..io.archive import archive_layout, describe_index, index_archive
from ..io.gradings import load_narrowing
from ..io.labels import SCHEMES
from ..io.outputs import claim_output, done_keys, failure, finish_tables, new_attempt, part_key, write_block_crops, write_block_parts
from ..io.scans import ScanError, read_scan
from ..io.store import refresh_root_group
from ..schema import ScanStatus
from .instances import looks_binary
from .scan import measure_mask, measured_count

log = logging.getLogger(__name__)


def measure_scan(scan: dict, cfg: Config, scheme: str | None = None, fail_at: dict | None = None) -> dict:
    """Read one mask file and measure it; returns its table values (``io.outputs``) and its ``crops``
    and their ``levels``, which ``measure_block`` writes with those of the rest of the block.

    Bad input (labels that do not fit ``scheme`` included) becomes the scan's status; any other
    exception its ``error`` row with the stage. ``fail_at`` ({stage: scan_id}) raises on purpose, for
    the fault tests.
    """
    started = time.perf_counter()
    scan = {**scan, "path": scan.get("mask_path"), "disc_rows": [], "n_discs": 0}
    stage = "load"
    try:
        inject_fault(fail_at, stage, scan["scan_id"])
        volume = read_scan(scan["mask_path"], cfg.limits, check_voxels=False)
        loaded = time.perf_counter()
        stage = "measure"
        inject_fault(fail_at, stage, scan["scan_id"])
        binary = scheme is None and looks_binary(volume.voxels)  # by default a 0/1 mask is a prediction
        measured = measure_mask(volume, cfg, binary=binary, scheme=scheme)
        stage = "store"
        inject_fault(fail_at, stage, scan["scan_id"])
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
        "crops": measured.crops,
        "levels": measured.levels,
        "seconds_load": loaded - started,
        "seconds_measure": time.perf_counter() - loaded,
    }


def measure_block(scans: list[dict], out: str, cfg: Config, attempt: int, scheme: str | None = None, fail_at: dict | None = None) -> list[tuple[str, str]]:
    """A Ray task's work: measure a block of masks, write their rows as one part; returns (scan_id, status)s."""
    rows = [measure_scan(scan, cfg, scheme, fail_at) for scan in scans]
    try:
        write_block_crops(Path(out), rows, attempt)
    except Exception as err:  # noqa: BLE001 - the scans whose crops were lost are error rows, the rest stand
        rows = [{**row, **failure("store", err), "disc_rows": [], "n_discs": 0} if len(row.get("crops", ())) else row for row in rows]
    write_block_parts(Path(out), rows, attempt)
    return [(row["scan_id"], row["status"]) for row in rows]


def run_measure(
    masks_root: Path,
    out: Path,
    cfg: Config = Config(),
    labels: Path | None = None,
    overwrite: bool = False,
    scheme: str | None = None,
    retry_failed: bool = False,
    fail_at: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Measure every mask of an archive (``io.archive.index_archive``'s layouts); returns the discs table.

    ``labels`` is the gradings CSV; ``scheme`` the masks' label scheme (``io.labels``; None: SPIDER labels,
    or binary for 0/1 masks). Ray tasks of a block of masks each. Re-running resumes (scans with a row
    are skipped; failed ones are measured again with ``retry_failed``); ``overwrite`` starts afresh. A
    non-empty ``out`` that is not a previous measure output with the same config and scheme is refused.
    """
    masks_root, out = Path(masks_root), Path(out)
    if scheme is not None and scheme != "auto" and scheme not in SCHEMES:
        raise ValueError(f"unknown label scheme {scheme!r}: one of {', '.join(SCHEMES)} or 'auto'")
    marker = out / "measure.json"
    if not overwrite and marker.is_file() and json.loads(marker.read_text()).get("label_scheme") != scheme:
        previous = json.loads(marker.read_text()).get("label_scheme")
        raise FileExistsError(f"{out} was measured with label scheme {previous!r}, not {scheme!r}; use --overwrite to start again")
    claim_output(out, "measure", cfg, overwrite, masks=str(masks_root), label_scheme=scheme)
    attempt = new_attempt()
    index = index_archive(masks_root, use="masks")
    log.info("measure: %s\n%s", masks_root, describe_index(index, archive_layout(masks_root)))
    scans = [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in index.to_dict("records")]
    done = done_keys(out, retry_failed)
    pending = [s for s in scans if part_key(s) not in done]
    failed = [{**s, "path": s.get("mask_path"), "n_discs": 0} for s in pending if s["status"] != ScanStatus.OK]
    if failed:  # unusable ids and missing files need no task: one part for all of them
        write_block_parts(out, failed, attempt)
    todo = [s for s in pending if s["status"] == ScanStatus.OK]
    log.info("measure: %d scans, %d done before, %d to do", len(scans), len(scans) - len(pending), len(todo))
    if todo:
        _run_tasks(todo, out, cfg, attempt, scheme, fail_at)
    gradings = Path(labels) if labels is not None else masks_root / "radiological_gradings.csv"
    metadata = {"config": cfg.digest(), "labels": str(gradings) if gradings.is_file() else ""}
    _, discs = finish_tables(out, 0, metadata, load_narrowing(gradings), cfg.discs.join_threshold())
    refresh_root_group(out / "crops.zarr")
    return discs


def _run_tasks(todo: list[dict], out: Path, cfg: Config, attempt: int, scheme: str | None, fail_at: dict | None) -> None:
    import ray

    from ..pipeline.progress import Progress
    from ..runtime import init_ray, scans_per_block

    init_ray()  # no-op when the CLI (or a cluster job) already connected
    size = scans_per_block(len(todo), cfg.pipeline.block_scans)
    task = ray.remote(num_cpus=1, memory=cfg.pipeline.task_memory_mb * 2**20)(measure_block)
    pending = [task.remote(todo[i : i + size], str(out), cfg, attempt, scheme, fail_at) for i in range(0, len(todo), size)]
    progress = Progress(len(todo), what="masks")
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=10)
        for statuses in ray.get(ready):  # an infrastructure failure raises here, loudly
            for scan_id, status in statuses:
                progress.add(scan_id, status)
        progress.show()
    progress.close()
