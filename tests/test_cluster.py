"""A real two-node Ray cluster on this machine: every job in jobs/ submitted through the Ray Jobs API.

Marked ``cluster``; the default test run (and so CI) includes it. The head and the worker node each
advertise 2 CPUs, a custom resource naming them and one ``seg_slot``; the scoring job's two
segmentation actors each ask for a slot, so one runs on each node (placement by resources, not by
SPREAD, which is only a preference and packed both on one node when the machine was busy), and the
node that segmented each scan is recorded in scans.parquet.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from rayspine.synth import synthesize_archive

from .local_cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.cluster


def _job(cluster: LocalCluster, script: str, *args: str, env: str = "") -> str:
    status, logs = cluster.submit(f"{env} {sys.executable} jobs/{script} " + " ".join(args), working_dir=ROOT)
    assert status == "SUCCEEDED", f"{script} {status}:\n{logs[-4000:]}"
    return logs


def test_every_job_runs_on_a_two_node_cluster(tmp_path, ray_local):
    archive = tmp_path / "archive"
    synthesize_archive(archive, patients=10, sites=2, seed=5, size="small", overwrite=True)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"seg": {"max_epochs": 2, "patience": 2}, "pipeline": {"seg_actors": 2, "seg_actor_resources": {"seg_slot": 1}}, "cv": {"n_bootstrap": 50}}))
    seg, scored, sweep, cv = (tmp_path / name for name in ("seg", "scored", "sweep", "cv"))

    with LocalCluster(tmp_path / "cluster") as cluster:
        _job(cluster, "train_segmenter.py", str(archive), str(seg), "--test-site site2", f"--config {config}")
        assert (seg / "model.safetensors").is_file() and json.loads((seg / "metrics.json").read_text())["n_test"] > 0

        # Ray Data hands out scans as soon as one actor is up; waiting for both keeps the first from
        # scoring all ten before the second has loaded its network on a busy machine.
        wait = "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S=300"
        logs = _job(cluster, "score_archive.py", str(archive), str(scored), f"--seg {seg}", f"--config {config}", env=wait)
        scans = pd.read_parquet(scored / "scans.parquet")
        assert len(scans) == 10 and set(scans.scan_id) == {f"{i}_t1" for i in range(1, 11)}
        nodes = set(scans.node_id.dropna()) - {""}
        assert len(nodes) == 2, f"segmentation ran on {len(nodes)} node(s): {logs[-2000:]}"
        assert (scored / "report.html").is_file()

        # The sweep and CV need discs: ground-truth crops, measured here on the test session's own Ray.
        from rayspine.measure.command import run_measure

        gt = tmp_path / "gt"
        run_measure(archive, gt)
        _job(cluster, "sweep_bottlenecks.py", str(sweep), str(gt), "--bottleneck 8 4", "--max-epochs 2")
        table = pd.read_csv(sweep / "sweep.csv")
        assert sorted(table.bottleneck) == [4, 8]

        _job(cluster, "cross_validate.py", str(gt / "discs.parquet"), str(cv), f"--labels {archive / 'radiological_gradings.csv'}", f"--config {config}")
        assert (cv / "cv.csv").is_file() and (cv / "roc.png").is_file()
    assert not cluster.alive(), "processes of the test cluster outlived it"
