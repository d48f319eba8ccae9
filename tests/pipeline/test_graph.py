"""`rayspine run` end to end on local Ray: good scans complete, bad ones get a status, re-runs and
killed runs end with exactly the rows of an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rayspine.config import Config
from rayspine.io.store import crop_locations, read_disc_crops, read_mask_zarr, written_groups
from rayspine.pipeline.graph import run_pipeline
from rayspine.pipeline.stages import SegmentScans
from rayspine.synth import synthesize_archive

from tests import oracle

CFG = Config()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    synthesize_archive(root, patients=5, sites=2, seed=3, size="small", overwrite=True)
    return root


def _tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_parquet(out / "scans.parquet"), pd.read_parquet(out / "discs.parquet")


def test_end_to_end_with_a_broken_scan_among_good_ones(archive, tmp_path, ray_local):
    broken = tmp_path / "archive"
    shutil.copytree(archive, broken)
    (broken / "images" / "99_t1.mha").write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 4 4\n")  # truncated header
    (broken / "images" / "98_t1.mha").write_bytes(b"")
    out = tmp_path / "out"
    summary = run_pipeline(broken, out, seg_dir=broken, cfg=CFG, segment_stage=oracle.OracleSegmentScans)
    scans, discs = _tables(out)
    status = scans.set_index("scan_id")["status"]
    assert status["98_t1"] == "unreadable" and status["99_t1"] in ("unreadable", "bad_header")
    assert (status.drop(["98_t1", "99_t1"]) == "ok").all() and len(scans) == 7
    truth = pd.read_parquet(archive / "truth.parquet")
    merged = truth.merge(discs, on=["scan_id", "level"], suffixes=("_true", ""))
    assert len(merged) == len(truth) == len(discs)  # every true disc found once, no extra
    # Geometry from the oracle masks (the ground truth) is the truth, to within the slice thickness.
    assert np.abs(merged.height_mm - merged.height_mm_true).median() < 1.0
    assert np.abs(merged.sagittal_angle_deg - merged.sagittal_angle_deg_true).median() < 3.0
    assert discs["disc_narrowing"].notna().all()  # joined from the archive's gradings
    mask = read_mask_zarr(out / "masks.zarr", "1_t1")
    from rayspine.io.scans import read_scan

    image = read_scan(broken / "images" / "1_t1.mha")
    assert mask.same_grid(image) and set(np.unique(mask.voxels)) - {0} <= {201, 202, 203, 204, 205, 206}
    assert "unreadable" in summary
    page = (out / "report.html").read_text()
    assert 'src="http' not in page and "<script" not in page  # opens offline, self-contained
    assert page.count("data:image/png;base64") >= 2  # geometry by level and by site
    assert page.count('src="qc/') >= 2 and (out / "qc" / "1_t1.png").is_file()  # QC pictures, files beside the page
    assert "98_t1" in page and "site1" in page and "site2" in page
    assert (scans.node_id.fillna("") != "").sum() == 5  # the segmenting node, for scans that reached it


@pytest.fixture(scope="module")
def tiny_autoencoder(archive, tmp_path_factory):
    """A bottleneck-3 autoencoder trained for two epochs on the archive's ground-truth crops."""
    from rayspine.autoencode.train import save_autoencoder
    from rayspine.autoencode.train import train_autoencoder
    from rayspine.io.scans import read_scan
    from rayspine.measure.scan import measure_mask

    crops = np.concatenate([measure_mask(read_scan(p, check_voxels=False), CFG).crops for p in sorted((archive / "masks").glob("*.mha"))])
    result = train_autoencoder(crops, 3, CFG.ae.__class__(max_epochs=2))
    return save_autoencoder(result, tmp_path_factory.mktemp("ae") / "bn3", CFG.grid.spacing_mm)


def test_scoring_with_an_encoder_on_two_cpus_completes_with_latents(archive, tiny_autoencoder, tmp_path, ray_local):
    """Segmentation and encoding actors together must leave CPUs for the tasks (this once hung); an
    exception in the encoder costs that one scan (its error row), not the run (tests/pipeline/test_errors.py)."""
    out = tmp_path / "out"
    run_pipeline(archive, out, seg_dir=archive, ae_dir=tiny_autoencoder, cfg=CFG, segment_stage=oracle.OracleSegmentScans, fail_at={"encode": "2_t1"})
    discs = pd.read_parquet(out / "discs.parquet")
    truth = pd.read_parquet(archive / "truth.parquet")
    assert len(discs) == (truth.scan_id != "2_t1").sum() and "2_t1" not in set(discs.scan_id)
    assert {"z0", "z1", "z2"} <= set(discs.columns) and discs[["z0", "z1", "z2"]].notna().all().all()
    assert "z3" not in discs.columns
    failed = pd.read_parquet(out / "scans.parquet").set_index("scan_id").loc["2_t1"]
    assert (failed.status, failed.error_stage, failed.error_type) == ("error", "encode", "InjectedFault")


def _parts(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in (out / "parts").rglob("*.parquet")}


def test_rerun_adds_no_rows_and_overwrite_starts_afresh(archive, tmp_path, ray_local):
    out = tmp_path / "out"
    run_pipeline(archive, out, seg_dir=archive, cfg=CFG, segment_stage=oracle.OracleSegmentScans)
    first_scans, first_discs = _tables(out)
    parts = _parts(out)
    # The parts of each block compacted into one per table at the end (test_blocks.py), the work list gone.
    assert sorted(parts) == sorted(p for p in parts if "/compacted-" in p) and len(parts) == 2 and not (out / "index").exists()
    run_pipeline(archive, out, seg_dir=archive, cfg=CFG, segment_stage=oracle.OracleSegmentScans)
    again_scans, again_discs = _tables(out)
    assert len(again_scans) == len(first_scans) and len(again_discs) == len(first_discs)
    assert _parts(out) == parts  # every scan skipped, nothing redone
    run_pipeline(archive, out, seg_dir=archive, cfg=CFG, segment_stage=oracle.OracleSegmentScans, overwrite=True)
    assert not set(_parts(out)) & set(parts)
    assert len(_tables(out)[1]) == len(first_discs)


def test_refuses_an_unknown_inference_precision_before_writing_anything(archive, tmp_path):
    with pytest.raises(ValueError, match="inference_precision is 'fp16'"):
        run_pipeline(archive, tmp_path / "out", seg_dir=archive, cfg=CFG.replace(seg={"inference_precision": "fp16"}), segment_stage=oracle.OracleSegmentScans)
    assert not (tmp_path / "out").exists()


def test_refuses_an_unrelated_non_empty_folder(archive, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        run_pipeline(archive, tmp_path, seg_dir=archive, cfg=CFG)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_driver_killed_mid_run_then_resumed_matches_an_uninterrupted_run(archive, tmp_path):
    """SIGKILL the driver once some scans are complete, run again, compare with a clean run."""
    reference = tmp_path / "reference"
    _run_in_subprocess(archive, reference).wait(timeout=600)
    killed = tmp_path / "killed"
    proc = _run_in_subprocess(archive, killed, slow=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((killed / "parts" / "scans").glob("*.parquet"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()
    done_before = len(list((killed / "parts" / "scans").glob("*.parquet")))
    assert 0 < done_before < 5, "the kill should land part-way through"
    assert _run_in_subprocess(archive, killed).wait(timeout=600) == 0
    ref_scans, ref_discs = _tables(reference)
    got_scans, got_discs = _tables(killed)
    keys = ["scan_id", "level"]
    columns = ["scan_id", "level", "status", "height_mm", "ap_width_mm", "sagittal_angle_deg", "crop_index", "disc_narrowing"]
    got_discs, ref_discs = (d.sort_values(keys).reset_index(drop=True) for d in (got_discs, ref_discs))
    pd.testing.assert_frame_equal(got_discs[columns], ref_discs[columns])
    assert list(got_scans.scan_id) == list(ref_scans.scan_id) and (got_scans.status == ref_scans.status).all()
    for scan_id in ref_scans.scan_id:
        assert np.array_equal(read_mask_zarr(killed / "masks.zarr", scan_id).voxels, read_mask_zarr(reference / "masks.zarr", scan_id).voxels)
    # some crops sit in other blocks (the resumed run's), but each disc's crop is the same, and no block
    # of the killed run is left that holds no scan's crops
    with_crop = ref_discs.crop_index >= 0
    assert np.array_equal(read_disc_crops(killed / "crops.zarr", got_discs[with_crop]), read_disc_crops(reference / "crops.zarr", ref_discs[with_crop]))
    assert written_groups(killed / "crops.zarr") == {group for group, _ in crop_locations(killed / "crops.zarr").values()}


def _run_in_subprocess(archive: Path, out: Path, slow: bool = False) -> subprocess.Popen:
    code = (
        "import sys; sys.path.insert(0, %r); from tests import oracle; from rayspine.pipeline.graph import run_pipeline; "
        "from rayspine.runtime import init_ray; init_ray(num_cpus=2); "
        "run_pipeline(%r, %r, seg_dir=%r, segment_stage=oracle.%s)"
        % (str(Path(__file__).parents[1]), str(archive), str(out), str(archive), "SlowOracleSegmentScans" if slow else "OracleSegmentScans")
    )
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_real_stage_class_is_the_default():
    import inspect

    assert inspect.signature(run_pipeline).parameters["segment_stage"].default is SegmentScans


def test_report_says_so_when_no_disc_passed_its_checks(tmp_path):
    # A weak segmenter can leave every disc flagged (merged, too large): the report must still be written.
    from rayspine.report.html import write_report
    from rayspine.schema import geometry_columns

    scans = pd.DataFrame({"scan_id": ["1_t1"], "site": ["site1"], "status": ["ok"], "message": [""],
                          "path": [str(tmp_path / "gone.mha")], "seconds_segment": [1.0]})
    discs = pd.DataFrame({"scan_id": ["1_t1", "1_t1"], "site": ["site1"] * 2, "level": [1, 2],
                          "status": ["possibly_merged", "too_large"], **{c: [np.nan] * 2 for c in geometry_columns()}})
    scans.to_parquet(tmp_path / "scans.parquet")
    discs.to_parquet(tmp_path / "discs.parquet")
    page = write_report(tmp_path).read_text()
    assert "No disc passed its checks (possibly_merged: 1, too_large: 1)" in page


def test_no_hang_warning_when_cpus_were_held_a_moment_before_the_graph_starts(archive, tmp_path, ray_local, monkeypatch):
    """Ray's resource view shows finished work's CPUs as taken for 50-100 ms, and Ray Data warns that the
    job "will hang" when it starts at a moment with none free: in the demo, right after the index files'
    metadata tasks (which ``build_graph`` runs) ended. Here actors hold every CPU and end as the graph is built."""
    import ray.data.dataset as ray_dataset
    from ray.util.debug import reset_log_once

    import rayspine.pipeline.graph as graph
    from rayspine.runtime import free_cpus_on_one_node, largest_node_cpus

    # Start from a Ray with every CPU free, so that only this test's actors are in the way: in one of
    # four full fresh-clone runs the warning came here (alone the test passed 6 of 6), as if something
    # of the earlier tests' graphs still took a CPU as this graph started (not pinned down).
    assert free_cpus_on_one_node(wait_s=10.0) >= largest_node_cpus()

    @ray_local.remote(num_cpus=1)
    class HoldsACpu:
        def ready(self):
            return True

    def build_then_release(*args, **kwargs):
        dataset = build_graph(*args, **kwargs)
        holders = [HoldsACpu.remote() for _ in range(int(ray_local.cluster_resources()["CPU"]))]
        ray_local.get([h.ready.remote() for h in holders])
        for holder in holders:
            ray_local.kill(holder)
        lagging.append(not ray_local.available_resources().get("CPU"))  # the view still counts the ended actors
        return dataset

    build_graph, lagging = graph.build_graph, []
    monkeypatch.setattr(graph, "build_graph", build_then_release)
    reset_log_once("cpu_warning")  # Ray Data warns once per process
    warned = []  # Ray Data's logger has handlers of its own, out of caplog's reach: its warnings, recorded
    monkeypatch.setattr(ray_dataset.logger, "warning", lambda message, *args, **kwargs: warned.append(str(message)))
    run_pipeline(archive, tmp_path / "out", seg_dir=archive, cfg=CFG, segment_stage=oracle.OracleSegmentScans, report=False)
    if not lagging[0]:
        pytest.skip("Ray's resource view caught up at once: the moment this test needs did not happen")
    assert not [w for w in warned if "available CPUs" in w]
