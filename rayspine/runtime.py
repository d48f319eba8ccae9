"""Connecting to Ray and sizing work from the resources the cluster has and can grow to.

On a laptop the program starts its own local Ray; under ``ray job submit`` (or with ``RAY_ADDRESS``
set) it joins the running cluster. The same code runs in both places. Under an autoscaler, plans
count the node types it can launch: a request that no live node can hold (a GPU, with only a 0-CPU
head up) is what makes the autoscaler launch one.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config, PipelineConfig, ResourcesConfig

log = logging.getLogger(__name__)


# How long an idle Ray worker process is kept beyond Ray's soft limit (one per CPU) before it is killed.
IDLE_WORKER_KEEP_MS = 60_000


def keep_idle_workers() -> None:
    """Set the local Ray to be started to keep idle workers ``IDLE_WORKER_KEEP_MS`` (a value the user set wins).

    Ray keeps as many idle worker processes as CPUs and kills any others after 1 s idle, but the graph's
    half-CPU tasks and CPU-free reads and writes run about twice as many: on 2 CPUs Ray killed and
    restarted about ten workers per 128 scans, each importing the stages again (2.4 CPU-s). Kept for a
    minute of idleness, the run took 81-82 s instead of 89-94 s, its first result 17-18 s instead of
    24-25 s (bench/pipeline.md, session 9). cluster.yaml sets the same on its worker nodes.
    """
    os.environ.setdefault("RAY_idle_worker_killing_time_threshold_ms", str(IDLE_WORKER_KEEP_MS))


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
        keep_idle_workers()
        # The dashboard on loopback only (a free port from 8265 on): Ray Train's placement-group cleaner
        # asks the State API, which the dashboard serves, whether training still runs; without it, it
        # logged "State API may be temporarily unavailable" every second of `train-seg`. It costs ~1 s.
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", runtime_env=env, log_to_driver=True)
    log.info("ray resources: %s", ray.cluster_resources())


# --- what the cluster can grow to ----------------------------------------------------------------
# A node type without a bound (``max_workers`` absent or -1) counts as this many nodes: enough for any
# pool this program sizes, few enough that a plan stays a plan.
UNBOUNDED_NODES = 64


@dataclass(frozen=True)
class NodeShape:
    """One node type the cluster can launch: its resources and how many of it may run."""

    name: str
    resources: dict
    max_count: int


@dataclass(frozen=True)
class Capacity:
    """The resources a plan may count on: the live nodes, plus what the autoscaler can still launch.

    Under an autoscaler the live cluster may be a head with no CPUs; sizing from it alone gives one CPU
    actor and the autoscaler, which only answers requests, never launches a GPU node.
    """

    cpus: float
    gpus: float
    node_cpus: float  # CPUs of the largest node, live or launchable: one worker never holds more
    autoscaling: bool = False  # some node type can still be launched


def node_types_from_autoscaling_config(config: dict) -> list[NodeShape]:
    """Worker node types of a ``ray up`` / autoscaler config (``available_node_types``), bounded by
    each type's ``max_workers`` and the cluster's own ``max_workers``."""
    cluster_max = config.get("max_workers")
    head = config.get("head_node_type")
    shapes = []
    for name, spec in (config.get("available_node_types") or {}).items():
        count = spec.get("max_workers", cluster_max if cluster_max is not None else -1)
        if name == head or count == 0:
            continue
        if count is None or count < 0:
            count = cluster_max if cluster_max is not None and cluster_max >= 0 else UNBOUNDED_NODES
        if cluster_max is not None and cluster_max >= 0:
            count = min(count, cluster_max)
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items() if k != "object_store_memory"}
        shapes.append(NodeShape(name=name, resources=resources, max_count=int(count)))
    return shapes


def plan_capacity(live: dict, head: dict, live_node_cpus: float, shapes: list[NodeShape]) -> Capacity:
    """The larger of the live cluster and the head plus every launchable node type at its maximum
    count (the autoscaler's own nodes count once, whether running yet or not)."""
    grown = {key: float(head.get(key, 0)) + sum(s.resources.get(key, 0) * s.max_count for s in shapes) for key in ("CPU", "GPU")}
    cpus, gpus = (max(float(live.get(key, 0)), grown[key]) for key in ("CPU", "GPU"))
    node_cpus = max([float(live_node_cpus), *(s.resources.get("CPU", 0) for s in shapes)])
    return Capacity(cpus=max(cpus, 1.0), gpus=gpus, node_cpus=max(node_cpus, 1.0), autoscaling=bool(shapes))


def launchable_node_types() -> list[NodeShape]:
    """The node types this cluster's autoscaler can launch, [] without an autoscaler (a laptop).

    Two places hold them in Ray 2.60. Autoscaler v2 and KubeRay report a cluster config to the GCS
    (what Ray Data and Ray Train read: ``ray._private.state.state.get_cluster_config()``). The classic
    autoscaler of ``ray up`` keeps them in the config file its monitor was started with (``ray up``
    writes it to ``~/ray_bootstrap_config.yaml`` on the head, where ``ray job submit`` runs the job);
    the monitor serving this cluster's GCS names the file on its command line.
    """
    shapes = _node_types_from_gcs()
    if shapes is None:
        from .io.remote import read_cluster_config

        shapes = node_types_from_autoscaling_config(read_cluster_config(_monitor_autoscaling_config()))
    # Workers that only match a node already running are still launchable (a type's max counts all).
    return [s for s in shapes if s.max_count > 0 and s.resources]


def _node_types_from_gcs() -> list[NodeShape] | None:
    import ray
    import ray._private.state

    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # an older GCS without the key, or not connected
        return None
    if not config or not config.node_group_configs:
        return None
    head = next((n["Resources"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n["Resources"]), {})
    shapes = []
    for group in config.node_group_configs:
        resources = {k: float(v) for k, v in group.resources.items()}
        if group.max_count == 1 and all(resources.get(k, 0) == head.get(k, 0) for k in ("CPU", "GPU")):
            continue  # the head's own group, as Ray Data reads it: it cannot be launched again
        shapes.append(NodeShape(group.name, resources, UNBOUNDED_NODES if group.max_count < 0 else int(group.max_count)))
    return shapes


def _monitor_autoscaling_config() -> Path:
    """The ``--autoscaling-config`` of the autoscaler monitor serving the GCS we are connected to,
    else where ``ray up`` puts it."""
    import psutil
    import ray

    port = str(ray.get_runtime_context().gcs_address).rsplit(":", 1)[-1]
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info.get("cmdline") or []
        if not any(a.endswith("autoscaler/_private/monitor.py") or a.endswith("autoscaler/v2/monitor.py") for a in args[:3]):
            continue
        gcs = [a.split("=", 1)[1] for a in args if a.startswith("--gcs-address=")]
        config = [a.split("=", 1)[1] for a in args if a.startswith("--autoscaling-config=")]
        if gcs and config and gcs[0].rsplit(":", 1)[-1] == port:
            return Path(config[0]).expanduser()
    return Path("~/ray_bootstrap_config.yaml").expanduser()


def cluster_capacity() -> Capacity:
    """``plan_capacity`` of the connected Ray cluster."""
    import ray

    shapes = launchable_node_types()
    head = next((n["Resources"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n["Resources"]), {})
    capacity = plan_capacity(ray.cluster_resources(), head, largest_node_cpus(), shapes)
    log.info("cluster capacity: %s (launchable node types: %s)", capacity, [(s.name, s.resources, s.max_count) for s in shapes])
    return capacity


def scans_per_block(n_scans: int, most: int) -> int:
    """Scans per block of work (a task of ``measure``, a Ray Data block of ``run``): ``most``, fewer when
    the archive is small for the cluster it can grow to.

    Every CPU should see a few blocks (else one task loads a whole block while the others wait); beyond
    that, bigger blocks mean fewer tasks, fewer driver-side blocks and fewer files.
    """
    cpus = max(1.0, cluster_capacity().cpus)  # a 0-CPU head under an autoscaler is not the cluster
    return max(1, min(most, math.ceil(n_scans / (4 * cpus))))


# --- model actor pools ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolPlan:
    """An actor pool: between ``min_size`` and ``max_size`` actors (Ray Data grows it while work
    queues, and the autoscaler launches nodes for actors that do not fit), each holding these."""

    min_size: int
    max_size: int
    num_cpus: float
    num_gpus: float
    resources: dict = field(default_factory=dict)  # custom resources per actor (pin a pool to nodes)

    @property
    def size(self) -> int:
        """The most actors the pool may hold (what the CPU tasks are sized against)."""
        return self.max_size

    def strategy(self):
        import ray.data

        if self.min_size == self.max_size:
            return ray.data.ActorPoolStrategy(size=self.max_size)
        return ray.data.ActorPoolStrategy(min_size=self.min_size, max_size=self.max_size)


def _bounds(fixed: int | None, low: int, high: int | None, available: int) -> tuple[int, int]:
    if fixed:
        return fixed, fixed
    top = max(1, high or available)
    return min(max(1, low), top), top


def plan_model_pools(
    capacity: Capacity, pipeline: PipelineConfig, with_encoder: bool = True, use_gpu: bool | None = None
) -> tuple[PoolPlan, PoolPlan | None]:
    """Actor pools for segmentation and encoding that always leave room for the CPU tasks.

    With GPUs (some node can have one, unless ``use_gpu`` is False): each actor asks for a
    GPU share, one segmentation and one encoding actor per GPU (0.75 + 0.25, so neither pool can take
    every GPU from the other), from ``*_min`` actors up to one per GPU the cluster can grow to. The
    request is what makes an autoscaler launch GPU nodes. Without: a quarter of the CPUs (at least
    one) stays free for reading, measuring and writing; the encoder (a small network) holds a quarter
    CPU; segmentation actors take one CPU each of what is left, at least one. An actor pool that
    holds every CPU starves the read tasks and the graph hangs, so a request for more actors than
    that is cut down. A laptop's pool is fixed at that size; an autoscaling cluster's starts small.
    """
    use_gpu = use_gpu if use_gpu is not None else capacity.gpus >= 1
    seg_resources = dict(pipeline.seg_actor_resources)
    if use_gpu:
        gpus = max(1, int(capacity.gpus))
        low, high = _bounds(pipeline.seg_actors, pipeline.seg_actors_min, pipeline.seg_actors_max, gpus)
        seg = PoolPlan(low, high, num_cpus=1, num_gpus=0.75 if with_encoder else 1.0, resources=seg_resources)
        if not with_encoder:
            return seg, None
        low, high = _bounds(pipeline.encode_actors, pipeline.encode_actors_min, pipeline.encode_actors_max, high)
        return seg, PoolPlan(low, high, num_cpus=0.5, num_gpus=0.25)
    cpus = capacity.cpus
    encode = None
    if with_encoder:
        size = pipeline.encode_actors or 1
        encode = PoolPlan(size, size, num_cpus=0.25, num_gpus=0)
    reserve = max(1.0, 0.25 * cpus)
    room = max(1, int(cpus - reserve - (encode.max_size * encode.num_cpus if encode else 0)))
    requested = pipeline.seg_actors or pipeline.seg_actors_max
    if requested and requested > room:
        log.warning("%d segmentation actors requested, %d fit beside the CPU tasks on %g CPUs", requested, room, cpus)
    high = min(requested or room, room)
    low = high if pipeline.seg_actors or not capacity.autoscaling else min(max(1, pipeline.seg_actors_min), high)
    return PoolPlan(low, high, num_cpus=1, num_gpus=0, resources=seg_resources), encode


def model_pools(cfg: Config, with_encoder: bool) -> tuple[PoolPlan, PoolPlan | None]:
    """``plan_model_pools`` for what this Ray cluster has and can grow to."""
    return plan_model_pools(cluster_capacity(), cfg.pipeline, with_encoder, cfg.resources.use_gpu)


# --- Ray Train workers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainPlan:
    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    threads: int  # torch threads per worker


def plan_train_workers(capacity: Capacity, resources: ResourcesConfig, free_cpus: int) -> TrainPlan:
    """Ray Train workers: one per GPU the cluster can grow to (or ``train_workers``), each holding a
    GPU, so an autoscaler launches the GPU nodes; without GPUs one worker with every core a node has
    free (``free_cpus``; on a cluster whose nodes are not up yet, a whole launchable node)."""
    use_gpu = resources.use_gpu if resources.use_gpu is not None else capacity.gpus >= 1
    if use_gpu:
        workers = resources.train_workers or max(1, int(capacity.gpus))
        return TrainPlan(num_workers=workers, use_gpu=True, cpus_per_worker=1, threads=2)
    cpus = int(free_cpus) if free_cpus >= 1 else max(1, int(capacity.node_cpus))
    return TrainPlan(num_workers=resources.train_workers or 1, use_gpu=False, cpus_per_worker=cpus, threads=cpus)


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
    """``[fn(*args) for args in calls]`` as Ray tasks of ``num_cpus`` each, results in order."""
    results: list = [None] * len(calls)
    for index, result in ray_map_as_completed(fn, calls, num_cpus):
        results[index] = result
    return results


def ray_map_as_completed(fn, calls: list[tuple], num_cpus: float = 1, num_gpus: float = 0):
    """``(index, fn(*calls[index]))`` as each Ray task of ``num_cpus`` (and ``num_gpus``) finishes, so that
    a caller can keep each result at once (a long run that fails late loses only the unfinished tasks).

    Each distinct argument array is put in the object store once, however many calls share it.
    """
    import ray

    init_ray()
    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(fn)
    refs: dict[int, object] = {}

    def shared(value):
        if hasattr(value, "__array__") and getattr(value, "nbytes", 0) > 1024:
            return refs.setdefault(id(value), ray.put(value))
        return value

    pending = {task.remote(*(shared(a) for a in args)): index for index, args in enumerate(calls)}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        yield pending.pop(done[0]), ray.get(done[0])


def map_here_or_on_ray(fn, calls: list[tuple]) -> list:
    """``[fn(*args) for args in calls]``: as Ray tasks (``ray_map``) when this process is already connected
    to a Ray with CPUs free now (at the end of a ``run``), else one after another here. For work at the
    end of a command (the report's pictures): starting a Ray, or waiting for an autoscaler's CPU nodes,
    would cost more than the work."""
    import ray

    if len(calls) > 1 and ray.is_initialized() and ray.available_resources().get("CPU", 0) >= 2:
        return ray_map(fn, calls)
    return [fn(*args) for args in calls]
