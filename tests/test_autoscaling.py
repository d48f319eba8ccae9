"""Ray's fake autoscaler on this machine: a head with no CPUs, GPU and CPU worker types at
``min_workers: 0``, and the scoring, training and sweep jobs submitted through the Jobs API.

No node but the head exists when the jobs start, so every resource comes from a node the autoscaler
launched for a request the jobs made. The GPU worker type advertises ``GPU: 1`` without a GPU: an
actor holding it computes on the CPU, which is enough to show that the jobs ask for GPUs (issue 19:
sized from an empty head, they asked for one CPU each and the autoscaler never launched a GPU node).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from rayspine.io.cards import read_card
from rayspine.synth import synthesize_archive

from .local_cluster import FakeAutoscalingCluster

ROOT = Path(__file__).resolve().parents[1]
# 7 to 11 minutes on this shared 2-core machine (four jobs, fake nodes started on demand): slow as well.
pytestmark = [pytest.mark.cluster, pytest.mark.slow]
STORE = 300 * 1024**2
WORKER_TYPES = {
    "gpu_worker": {"resources": {"CPU": 2, "GPU": 1, "object_store_memory": STORE}, "min_workers": 0, "max_workers": 2},
    "cpu_worker": {"resources": {"CPU": 2, "object_store_memory": STORE}, "min_workers": 0, "max_workers": 1},
}
PROBE = '''
import json, sys
import ray
from ray.util.state import list_actors
ray.init()
actors = [{"class_name": a.class_name, "node_id": a.node_id, "required_resources": a.required_resources}
          for a in list_actors(detail=True, limit=10000, raise_on_missing_output=False)]
nodes = [{"node_id": n["NodeID"], "alive": n["Alive"], "resources": n["Resources"]} for n in ray.nodes()]
open(sys.argv[1], "w").write(json.dumps({"nodes": nodes, "actors": actors}))
'''


def _job(cluster: FakeAutoscalingCluster, command: str) -> str:
    status, logs = cluster.submit(command, working_dir=ROOT)
    assert status == "SUCCEEDED", f"{command} {status}:\n{logs[-4000:]}"
    return logs


def test_jobs_ask_for_gpus_and_the_autoscaler_launches_gpu_nodes_for_them(tmp_path, ray_local):
    archive = tmp_path / "archive"
    synthesize_archive(archive, patients=8, sites=2, seed=3, size="small", overwrite=True)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"seg": {"max_epochs": 1, "patience": 1}}))
    seg, scored, sweep, gt, probe = (tmp_path / name for name in ("seg", "scored", "sweep", "gt", "probe.py"))
    probe.write_text(PROBE)
    # The sweep needs discs: ground-truth crops, measured here on the test session's own Ray.
    from rayspine.measure.command import run_measure

    run_measure(archive, gt)

    python = sys.executable
    with FakeAutoscalingCluster(tmp_path / "cluster", WORKER_TYPES) as cluster:
        _job(cluster, f"{python} jobs/train_segmenter.py {archive} {seg} --test-site site2 --config {config}")
        _job(cluster, f"{python} jobs/score_archive.py {archive} {scored} --seg {seg} --config {config}")
        _job(cluster, f"{python} jobs/sweep_bottlenecks.py {sweep} {gt} --bottleneck 8 4 --max-epochs 1")
        _job(cluster, f"{python} {probe} {tmp_path / 'state.json'}")
    assert not cluster.alive(), "processes of the test cluster outlived it"

    state = json.loads((tmp_path / "state.json").read_text())
    head = [n["node_id"] for n in state["nodes"] if "node:__internal_head__" in n["resources"]]
    assert len(head) == 1 and next(n for n in state["nodes"] if n["node_id"] == head[0])["resources"].get("CPU", 0) == 0
    # Every other node was launched by the autoscaler: the test started only the head.
    gpu_nodes = {n["node_id"] for n in state["nodes"] if n["resources"].get("GPU", 0) >= 1 and n["node_id"] not in head}
    assert gpu_nodes, f"no GPU node was launched: {state['nodes']}"

    # Segmentation: every scan segmented on a GPU node, by actors that held a GPU.
    scans = pd.read_parquet(scored / "scans.parquet")
    # (A network trained for one epoch finds no discs: "no_discs" is still a segmented scan.)
    assert len(scans) == 8 and set(scans.status) <= {"ok", "no_discs"}, scans[["scan_id", "status", "message"]]
    assert set(scans.node_id) <= gpu_nodes, (set(scans.node_id), gpu_nodes)
    # Every actor of the pool asked for a GPU; those placed (the pool may have grown by one that the
    # end of the run cancelled before its node came up) ran on GPU nodes.
    segmenters = [a for a in state["actors"] if "SegmentScans" in a["class_name"]]
    placed = [a for a in segmenters if a["node_id"]]
    assert placed and all(a["required_resources"].get("GPU", 0) == 1.0 for a in segmenters), segmenters
    assert all(a["node_id"] in gpu_nodes for a in placed), (placed, gpu_nodes)

    # Ray Train: one worker per GPU the cluster can grow to (two), each on a GPU node holding its GPU.
    workers = json.loads((seg / "metrics.json").read_text())["train_workers"]
    assert [w["rank"] for w in workers] == [0, 1], workers
    assert all(w["node_id"] in gpu_nodes and len(w["gpu_ids"]) == 1 for w in workers), (workers, gpu_nodes)
    assert len({w["node_id"] for w in workers}) == 2  # one GPU per node: the two ranks on two nodes

    # Ray Tune: each trial on a GPU node, holding a GPU.
    table = pd.read_csv(sweep / "sweep.csv")
    assert sorted(table.bottleneck) == [4, 8]
    for k in (4, 8):
        card = read_card(sweep / f"bn{k}")
        assert card.get("node_id") in gpu_nodes and len(card.get("gpu_ids")) == 1, (k, card.get("node_id"), card.get("gpu_ids"))
