"""One failure = one row (issue 19): an exception at any stage for one scan is that scan's `error` row with
the stage and the exception; every other scan completes; a re-run is a no-op unless --retry-failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rayspine.config import Config
from rayspine.io.store import read_mask_zarr
from rayspine.measure.command import run_measure
from rayspine.pipeline.graph import run_pipeline
from rayspine.synth import synthesize_archive

from tests import oracle

RUN_FAULTS = {"load": "1_t1", "segment": "2_t1", "mask": "3_t1", "measure": "4_t1", "store": "5_t1", "write": "6_t1"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    synthesize_archive(root, patients=7, sites=2, seed=5, size="small", overwrite=True)
    return root


def _parts(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "parts").rglob("*.parquet")}


def test_an_exception_at_each_stage_costs_one_scan_and_retry_failed_recovers_it(archive, tmp_path, ray_local):
    out = tmp_path / "out"
    run_pipeline(archive, out, seg_dir=archive, cfg=Config(), segment_stage=oracle.OracleSegmentScans, fail_at=RUN_FAULTS, report=False)
    scans = pd.read_parquet(out / "scans.parquet").set_index("scan_id")
    discs = pd.read_parquet(out / "discs.parquet")
    truth = pd.read_parquet(archive / "truth.parquet")
    for stage, scan_id in RUN_FAULTS.items():
        row = scans.loc[scan_id]
        assert (row.status, row.error_stage, row.error_type) == ("error", stage, "InjectedFault"), (stage, row.to_dict())
        assert f"injected at {stage} for {scan_id}" in row.message and row.n_discs == 0
    assert scans.loc["7_t1"].status == "ok" and pd.isna(scans.loc["7_t1"].error_stage)
    assert set(discs.scan_id) == {"7_t1"} and len(discs) == (truth.scan_id == "7_t1").sum()

    parts = _parts(out)
    run_pipeline(archive, out, seg_dir=archive, cfg=Config(), segment_stage=oracle.OracleSegmentScans, report=False)
    assert _parts(out) == parts  # failed scans are not retried unless asked: the re-run is a no-op

    run_pipeline(archive, out, seg_dir=archive, cfg=Config(), segment_stage=oracle.OracleSegmentScans, retry_failed=True, report=False)
    scans = pd.read_parquet(out / "scans.parquet")
    discs = pd.read_parquet(out / "discs.parquet")
    assert len(scans) == 7 and (scans.status == "ok").all() and scans.error_stage.isna().all()
    assert len(discs) == len(truth) and not discs.duplicated(["scan_id", "level"]).any()
    assert set(np.unique(read_mask_zarr(out / "masks.zarr", "5_t1").voxels)) - {0} <= {201, 202, 203, 204, 205, 206}


def test_measure_turns_an_exception_into_the_scans_error_row(archive, tmp_path, ray_local):
    out = tmp_path / "measured"
    faults = {"load": "1_t1", "measure": "2_t1", "store": "3_t1"}
    run_measure(archive, out, Config(), fail_at=faults)
    scans = pd.read_parquet(out / "scans.parquet").set_index("scan_id")
    for stage, scan_id in faults.items():
        assert (scans.loc[scan_id].status, scans.loc[scan_id].error_stage) == ("error", stage)
    assert (scans.drop(list(faults.values())).status == "ok").all() and len(scans) == 7
    discs = run_measure(archive, out, Config(), retry_failed=True)
    assert len(discs) == len(pd.read_parquet(archive / "truth.parquet")) and not discs.duplicated(["scan_id", "level"]).any()
