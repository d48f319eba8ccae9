"""Connecting to Ray and sizing work from the resources Ray actually has.

On a laptop the program starts its own local Ray; under ``ray job submit`` (or with ``RAY_ADDRESS``
set) it joins the running cluster. The same code runs in both places.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (set by ``ray job submit``), else start a local Ray."""
    # Load torch before Ray's core-worker threads start: seen here under `ray job submit`, torch's
    # oneMKL loader failed now and then ("Cannot load libtorch_cpu.so") when first imported after.
    import torch  # noqa: F401
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=env, log_to_driver=True)
    else:
        # A local Ray with no dashboard: faster start, and nothing listens beyond loopback.
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=env, log_to_driver=True)
    log.info("ray resources: %s", ray.cluster_resources())


@dataclass(frozen=True)
class PoolPlan:
    """How many model actors to run and what each one holds."""

    size: int
    num_gpus: float
    num_cpus: float


def plan_model_pools(
    cpus: float, gpus: float, seg_requested: int | None = None, encode_requested: int | None = None, with_encoder: bool = True
) -> tuple[PoolPlan, PoolPlan | None]:
    """Actor pools for segmentation and encoding that always leave room for the CPU tasks.

    With GPUs: one segmentation and one encoding actor per GPU, sharing it (0.75 + 0.25), so neither
    pool can take every GPU from the other. Without: a quarter of the CPUs (at least one) stays free for
    reading, measuring and writing; the encoder (a small network) holds a quarter CPU; segmentation
    actors take one CPU each of what is left, at least one. An actor pool that holds every CPU starves
    the read tasks and the graph hangs, so a request for more actors than that is cut down.
    """
    if gpus >= 1:
        size = seg_requested or int(gpus)
        seg = PoolPlan(size=size, num_gpus=0.75 if with_encoder else 1.0, num_cpus=1)
        encode = PoolPlan(size=encode_requested or size, num_gpus=0.25, num_cpus=0.5) if with_encoder else None
        return seg, encode
    encode = PoolPlan(size=encode_requested or 1, num_gpus=0, num_cpus=0.25) if with_encoder else None
    reserve = max(1.0, 0.25 * cpus)
    room = int(cpus - reserve - (encode.size * encode.num_cpus if encode else 0))
    size = max(1, min(seg_requested or room, room))
    if seg_requested and seg_requested > size:
        log.warning("%d segmentation actors requested, %d fit beside the CPU tasks on %g CPUs", seg_requested, size, cpus)
    return PoolPlan(size=size, num_gpus=0, num_cpus=1), encode


def model_pools(cfg_pipeline, with_encoder: bool) -> tuple[PoolPlan, PoolPlan | None]:
    """``plan_model_pools`` for the resources this Ray cluster has."""
    import ray

    resources = ray.cluster_resources()
    return plan_model_pools(
        resources.get("CPU", 1), resources.get("GPU", 0), cfg_pipeline.seg_actors, cfg_pipeline.encode_actors, with_encoder
    )


def largest_node_cpus() -> int:
    """CPUs of the biggest live node: one worker or trial can never hold more than a single node has."""
    import ray

    return max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1) or 1


def free_cpus_on_one_node(wait_s: float = 3.0) -> int:
    """CPUs free now, up to what the biggest node has (at least 1).

    Ray returns a finished task's CPUs to ``available_resources`` with a lag: read right after the
    data-preparation tasks, it said 1 of 2 and training ran on one thread, 40 % slower per epoch. So
    wait up to ``wait_s`` for the count to reach the node's total, keeping the best reading.
    """
    import time

    import ray

    total, best = largest_node_cpus(), 0
    deadline = time.monotonic() + wait_s
    while True:
        best = max(best, min(int(ray.available_resources().get("CPU", 0)), total))
        if best >= total or time.monotonic() > deadline:
            return max(1, best)
        time.sleep(0.1)


def ray_map(fn, calls: list[tuple], num_cpus: float = 1) -> list:
    """``[fn(*args) for args in calls]`` as Ray tasks of ``num_cpus`` each, results in order.

    Each distinct argument array is put in the object store once, however many calls share it.
    """
    import ray

    init_ray()
    task = ray.remote(num_cpus=num_cpus)(fn)
    refs: dict[int, object] = {}

    def shared(value):
        if hasattr(value, "__array__") and getattr(value, "nbytes", 0) > 1024:
            return refs.setdefault(id(value), ray.put(value))
        return value

    return ray.get([task.remote(*(shared(a) for a in args)) for args in calls])
