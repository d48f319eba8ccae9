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


def model_pool_plan(requested: int | None = None, reserve_cpus: int = 1) -> PoolPlan:
    """Actors for a model stage: one per GPU when the cluster has GPUs, otherwise CPU actors that leave
    ``reserve_cpus`` free for the read and CPU tasks (an actor pool holding every CPU starves them)."""
    import ray

    resources = ray.available_resources() or ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    if gpus:
        return PoolPlan(size=requested or gpus, num_gpus=1, num_cpus=1)
    size = requested or max(1, (cpus - reserve_cpus) // 2 if cpus > 4 else cpus - reserve_cpus)
    return PoolPlan(size=max(1, size), num_gpus=0, num_cpus=1)


def largest_node_cpus() -> int:
    """CPUs of the biggest live node: one worker or trial can never hold more than a single node has."""
    import ray

    return max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1) or 1


def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
