"""Faults: a segmentation actor that dies mid-run does not cost a scan."""

import shutil

import pandas as pd

from rayspine.config import Config
from rayspine.pipeline.graph import run_pipeline
from rayspine.synth import synthesize_archive

from tests import oracle


def test_a_killed_segmentation_actor_is_replaced_and_every_scan_completes(tmp_path, ray_local):
    archive = tmp_path / "archive"
    synthesize_archive(archive, patients=4, sites=2, seed=8, size="small", overwrite=True)
    out = tmp_path / "out"
    run_pipeline(archive, out, seg_dir=archive, cfg=Config(), segment_stage=oracle.DyingOnceOracleSegmentScans)
    assert (tmp_path / "archive.actor-died").exists()  # the actor really died once
    scans = pd.read_parquet(out / "scans.parquet")
    discs = pd.read_parquet(out / "discs.parquet")
    truth = pd.read_parquet(archive / "truth.parquet")
    assert sorted(scans.scan_id) == ["1_t1", "2_t1", "3_t1", "4_t1"] and (scans.status == "ok").all()
    assert len(discs) == len(truth) and not discs.duplicated(["scan_id", "level"]).any()
    shutil.rmtree(out)
