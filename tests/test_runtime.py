"""Sizing work from what the cluster has and can grow to (rayspine.runtime), with known answers."""

from __future__ import annotations

from pathlib import Path

import yaml

from rayspine.config import PipelineConfig, ResourcesConfig
from rayspine.runtime import Capacity, NodeShape, node_types_from_autoscaling_config, plan_capacity, plan_model_pools, plan_train_workers

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
LAPTOP = lambda cpus: Capacity(cpus=cpus, gpus=0, node_cpus=cpus)  # noqa: E731


def test_model_pools_always_leave_cpus_for_the_tasks():
    for cpus in (1, 2, 3, 4, 8, 16, 64):
        for with_encoder in (False, True):
            seg, enc = plan_model_pools(LAPTOP(cpus), PipelineConfig(), with_encoder=with_encoder)
            held = seg.max_size * seg.num_cpus + (enc.max_size * enc.num_cpus if enc else 0)
            assert seg.min_size == seg.max_size >= 1 and (enc is not None) == with_encoder  # a laptop: a fixed pool
            assert seg.num_gpus == 0 and seg.resources == {}
            if cpus >= 2:
                assert cpus - held >= 0.5, (cpus, with_encoder, seg, enc)  # a read task still fits
    assert plan_model_pools(LAPTOP(8), PipelineConfig(), with_encoder=False)[0].max_size == 6  # 8 - 2 reserved
    seg, _ = plan_model_pools(LAPTOP(2), PipelineConfig(seg_actors=4))
    assert seg.max_size == 1  # cut down, not a hang
    seg, enc = plan_model_pools(Capacity(cpus=16, gpus=4, node_cpus=16), PipelineConfig(), with_encoder=True)
    assert (seg.min_size, seg.max_size, enc.max_size) == (1, 4, 4) and seg.num_gpus + enc.num_gpus <= 1.0
    assert plan_model_pools(Capacity(cpus=16, gpus=4, node_cpus=16), PipelineConfig(), with_encoder=False)[0].num_gpus == 1.0


def test_pools_ask_for_gpus_a_cluster_can_launch_but_does_not_have_yet():
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    shapes = node_types_from_autoscaling_config(config)
    assert {s.name: (s.resources.get("GPU", 0), s.max_count) for s in shapes} == {"gpu_worker": (1, 8), "cpu_worker": (0, 16)}
    # The head of cluster.yaml has no CPUs and no worker is up: Ray's live resources are empty.
    capacity = plan_capacity({}, {}, 0, shapes)
    assert (capacity.cpus, capacity.gpus, capacity.node_cpus, capacity.autoscaling) == (8 * 8 + 16 * 16, 8, 16, True)
    seg, enc = plan_model_pools(capacity, PipelineConfig(), with_encoder=True)
    assert (seg.min_size, seg.max_size, seg.num_gpus, enc.max_size, enc.num_gpus) == (1, 8, 0.75, 8, 0.25)
    seg, _ = plan_model_pools(capacity, PipelineConfig(seg_actors_min=2, seg_actors_max=4), with_encoder=False)
    assert (seg.min_size, seg.max_size, seg.num_gpus) == (2, 4, 1.0)
    # No GPU on purpose: CPU actors, a pool that grows with the CPU nodes from one actor.
    seg, _ = plan_model_pools(capacity, PipelineConfig(seg_actors_max=10), with_encoder=False, use_gpu=False)
    assert (seg.min_size, seg.max_size, seg.num_gpus) == (1, 10, 0)
    train = plan_train_workers(capacity, ResourcesConfig(), free_cpus=0)
    assert (train.num_workers, train.use_gpu) == (8, True)
    assert plan_train_workers(capacity, ResourcesConfig(train_workers=2), 0).num_workers == 2
    cpu_train = plan_train_workers(capacity, ResourcesConfig(use_gpu=False), free_cpus=0)
    assert (cpu_train.num_workers, cpu_train.use_gpu, cpu_train.cpus_per_worker) == (1, False, 16)  # a whole launchable node


def test_capacity_counts_launchable_nodes_once_and_bounds_unbounded_types():
    shapes = [NodeShape("gpu", {"CPU": 4, "GPU": 1}, 2)]
    # Both GPU nodes already up: the live cluster is what the node types add up to, not twice that.
    live = {"CPU": 8, "GPU": 2}
    assert plan_capacity(live, {"CPU": 0}, 4, shapes) == Capacity(cpus=8, gpus=2, node_cpus=4, autoscaling=True)
    # A laptop: no node types, the live resources as they are.
    assert plan_capacity({"CPU": 2}, {"CPU": 2}, 2, []) == Capacity(cpus=2, gpus=0, node_cpus=2, autoscaling=False)
    config = {"max_workers": 5, "head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "gpu": {"resources": {"CPU": 4, "GPU": 2}, "min_workers": 0},  # no bound of its own: the cluster's
        "off": {"resources": {"CPU": 4}, "max_workers": 0},
    }}  # fmt: skip
    assert node_types_from_autoscaling_config(config) == [NodeShape("gpu", {"CPU": 4.0, "GPU": 2.0}, 5)]


def test_a_laptop_trains_on_one_cpu_worker_with_every_free_core():
    plan = plan_train_workers(LAPTOP(2), ResourcesConfig(), free_cpus=2)
    assert (plan.num_workers, plan.use_gpu, plan.cpus_per_worker, plan.threads) == (1, False, 2, 2)
    assert plan_train_workers(Capacity(cpus=8, gpus=2, node_cpus=4), ResourcesConfig(use_gpu=False), 3).cpus_per_worker == 3


def test_each_train_rank_fetches_only_its_own_share():
    from rayspine.segment.train import own_share

    items = list("abcde")
    assert [own_share(items, r, 2) for r in range(2)] == [list("ace"), list("bda")]  # equal lengths for DDP
    assert own_share(items, 0, 1) == items


KEEP_WORKERS_PROBE = """
import os, tempfile, time
from pathlib import Path
from rayspine.runtime import init_ray
init_ray(num_cpus=2)
import ray

@ray.remote(num_cpus=0.5)
def worker_pid(barrier):
    # Every task waits until all four run, so each holds a worker process of its own.
    Path(barrier, str(os.getpid())).touch()
    deadline = time.time() + 120
    while len(os.listdir(barrier)) < 4 and time.time() < deadline:
        time.sleep(0.05)
    return os.getpid()

def four_at_once():
    barrier = tempfile.mkdtemp()
    return set(ray.get([worker_pid.remote(barrier) for _ in range(4)]))

first = four_at_once()
time.sleep(4.0)  # idle for longer than Ray's default of 1 s
second = four_at_once()
print(len(first), len(first & second))
"""


def test_the_local_ray_keeps_its_half_cpu_task_workers_between_tasks():
    """Four half-CPU tasks on 2 CPUs hold four workers; Ray keeps two idle ones by default and killed the
    rest after 1 s, so every pause in a run restarted workers (and their imports). init_ray keeps them."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_idle_worker_killing_time_threshold_ms")}
    done = subprocess.run([sys.executable, "-c", KEEP_WORKERS_PROBE], capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    started, kept = map(int, done.stdout.split()[-2:])
    assert (started, kept) == (4, 4)


def test_cluster_worker_nodes_keep_idle_workers_as_the_local_ray_does():
    import shlex

    from rayspine.runtime import IDLE_WORKER_KEEP_MS

    start = next(c for c in yaml.safe_load(CLUSTER_YAML.read_text())["worker_start_ray_commands"] if "ray start" in c)
    words = shlex.split(start)
    assert f"RAY_idle_worker_killing_time_threshold_ms={IDLE_WORKER_KEEP_MS}" in words[: words.index("ray")]
