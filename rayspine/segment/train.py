"""Training the disc segmenter with Ray Train (``TorchTrainer``): one worker per GPU, else one CPU worker.

The loop follows the paper: BCE + Dice with equal weights, Adam (lr 1e-3), batches of four patches,
early stopping once validation IoU has not improved for ``patience`` epochs, best-IoU weights kept.
The weights validated and kept are an exponential moving average of the trained ones
(``SegConfig.ema_decay``): with batches of four they settle where the raw weights keep jumping.
Every epoch writes a Ray Train checkpoint (current, averaged and best weights, optimizer, counters)
to the run's storage; started again on the same storage, Ray Train restores the run and the loop
resumes from the last finished epoch.

Training items are prepared once (``segment.data.prepare_pair``) as Ray tasks and held in the object store,
so every worker reads the same in-memory arrays and no scan is preprocessed twice.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..config import Config, SegConfig
from ..errors import ModelFileError
from ..io import cards
from ..stats import iou_dice
from ..volume import Volume
from .infer import predict_logits, runs_in_bfloat16

WEIGHTS, BEST, OPTIMIZER, STATE = "model.safetensors", "best.safetensors", "optimizer.pt", "state.json"
AVERAGE = "average.safetensors"

# In the training function, log rather than print: Ray Train patches print to log and, with the worker's
# stdout wrapped, prints it as well, so every printed line reached the driver twice.
log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    best_state: dict  # state dict of the best-validation-IoU epoch (the last one when there is no validation)
    history: list[dict]  # one row per epoch: epoch, loss, val_iou, seconds
    best_epoch: int
    best_val_iou: float | None
    epochs: int
    seconds: float
    workers: list = field(default_factory=list)  # per rank: node_id and the GPU ids it held


def segmentation_loss(seg: SegConfig):
    """The training loss of ``seg``, on logits: BCE + Dice (the paper), plus the boundary term when
    ``seg.boundary_weight`` > 0. MONAI computes the label's signed distance map per patch on the CPU."""
    from monai.losses import BoundaryLoss, DiceCELoss

    region = DiceCELoss(sigmoid=True, lambda_dice=seg.dice_weight, lambda_ce=seg.bce_weight)
    if seg.boundary_weight <= 0:
        return region
    boundary = BoundaryLoss(sigmoid=True)
    return lambda logits, label: region(logits, label) + seg.boundary_weight * boundary(logits, label)


# --- weight averaging, usable without Ray ----------------------------------------------------------
def weight_average(net, decay: float):
    """An exponential moving average of ``net``'s weights (``torch.optim.swa_utils.AveragedModel``).

    The decay ramps up as ``(1 + n) / (10 + n)`` until it reaches ``decay``, so the first steps, from
    random weights, do not linger in the average. Buffers are copied, not averaged.
    """
    from torch.optim.swa_utils import AveragedModel

    def average(averaged, current, n_averaged):
        d = min(decay, (1.0 + float(n_averaged)) / (10.0 + float(n_averaged)))
        return averaged * d + current * (1.0 - d)

    return AveragedModel(net, avg_fn=average)


def update_average(average, net) -> None:
    average.update_parameters(net)
    for kept, current in zip(average.module.buffers(), net.buffers()):
        kept.detach().copy_(current)


def _unwrap(net):
    return net.module if hasattr(net, "module") else net


def _cpu_state(net) -> dict:
    return {k: v.detach().cpu().clone() for k, v in _unwrap(net).state_dict().items()}


# --- the Ray Train worker loop ---------------------------------------------------------------------
def _writable(item: dict) -> dict:
    """A copy of an item's arrays: those of the object store are read-only views, which MONAI's
    transforms hand to torch (undefined behaviour if written, and a UserWarning in every run)."""
    return {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in item.items()}


def own_share(items: list, rank: int, world: int) -> list:
    """Rank ``rank``'s items: every ``world``-th, from ``rank``. Shares are equal in length (the first
    items repeat) so that DDP ranks take the same number of steps."""
    return [items[(rank + world * i) % len(items)] for i in range(-(-len(items) // world))]


def train_loop_per_worker(config: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.utils import set_determinism
    from safetensors.torch import load_file, save_file

    from .data import train_transforms
    from .networks import init_output_bias

    seg = SegConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["seg"].items()})
    torch.set_num_threads(int(config["threads"]))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    set_determinism(seed=seg.seed + rank)
    # A worker may hold a GPU that torch cannot see (Ray's fake autoscaler advertises GPUs a CPU-only
    # machine does not have): then it computes on the CPU.
    device = ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")
    bfloat16 = runs_in_bfloat16(seg.train_precision, device)

    # The object store holds the prepared arrays once; each rank fetches and trains on its share only.
    train_items = [_writable(item) for item in ray.get(own_share(config["train_refs"], rank, world))]
    val_items = [_writable(item) for item in ray.get(config["val_refs"][rank::world])]
    placement = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                 "precision": "bfloat16" if bfloat16 else "float32"}
    workers = [None] * world
    if world > 1:
        torch.distributed.all_gather_object(workers, placement)
    else:
        workers = [placement]

    net = cards.network(cards.SEGMENTER, config["network"]).build(config["kwargs"])
    init_output_bias(net)  # overwritten below when fine-tuning or resuming
    if config.get("init_state") is not None:  # fine-tuning: the weights of another segmenter
        net.load_state_dict(ray.get(config["init_state"]))
    net = ray.train.torch.prepare_model(net, move_to_device=device)  # DDP when world > 1
    optimizer = torch.optim.Adam(net.parameters(), lr=seg.learning_rate)
    loss_fn = segmentation_loss(seg)

    # The weights that are validated and kept: the running average, or the raw weights without one.
    average = weight_average(_unwrap(net), seg.ema_decay) if seg.ema_decay > 0 else None
    scored = average.module if average is not None else _unwrap(net)

    state = {"epoch": 0, "best_iou": -1.0, "best_epoch": 0, "since_best": 0, "seconds": 0.0, "history": []}
    best_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # resuming an interrupted run
        with checkpoint.as_directory() as folder:
            folder = Path(folder)
            state = json.loads((folder / STATE).read_text())
            _unwrap(net).load_state_dict(load_file(str(folder / WEIGHTS), device=str(device)))
            optimizer.load_state_dict(torch.load(folder / OPTIMIZER, map_location=device, weights_only=True))
            best_state = load_file(str(folder / BEST))
            if average is not None and (folder / AVERAGE).is_file():
                average.load_state_dict(load_file(str(folder / AVERAGE), device=str(device)))
        if rank == 0:
            log.info("resuming segmenter training after epoch %d", state["epoch"])

    transform = train_transforms(seg.patch_size, seg.samples_per_scan, seg.augment_scale, seg.augment_rotate_deg, seg.soft_labels)
    dataset = CacheDataset(train_items, transform=transform, progress=False)
    # Each scan yields samples_per_scan patches, so this many scans make a batch of batch_size patches.
    loader = DataLoader(dataset, batch_size=max(1, seg.batch_size // seg.samples_per_scan), shuffle=True, num_workers=0)

    def finished() -> bool:  # judged afresh on resume, so a run can be continued with a larger limit
        out_of_time = seg.max_minutes > 0 and state["seconds"] >= 60 * seg.max_minutes
        return state["epoch"] >= seg.max_epochs or state["since_best"] >= seg.patience or out_of_time

    while not finished():
        start, cpu_start = time.perf_counter(), time.process_time()
        net.train()
        losses = []
        for batch in loader:
            image, label = batch["image"].to(device), batch["label"].to(device).float()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16):
                logits = net(image)
            loss = loss_fn(logits.float(), label)  # the loss in float32 whatever the network ran in
            loss.backward()
            optimizer.step()
            if average is not None:
                update_average(average, _unwrap(net))
            losses.append(float(loss.detach()))
        val_start = time.perf_counter()
        val_iou = _validate(scored, val_items, seg, device, world)
        val_seconds = time.perf_counter() - val_start
        state["epoch"] += 1
        epoch = state["epoch"]
        if val_iou is None or val_iou > state["best_iou"]:
            state["best_iou"], state["best_epoch"], state["since_best"] = (val_iou if val_iou is not None else -1.0), epoch, 0
            best_state = _cpu_state(scored)
        else:
            state["since_best"] += 1
        seconds = time.perf_counter() - start
        state["seconds"] += seconds
        # CPU seconds (all threads) beside wall seconds: on a shared machine they tell what a quiet one would take.
        row = {
            "epoch": epoch,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "val_iou": val_iou,
            "seconds": seconds,
            "val_seconds": val_seconds,
            "cpu_seconds": time.process_time() - cpu_start,
        }
        state["history"].append(row)
        if rank == 0:
            shown = "n/a" if val_iou is None else f"{val_iou:.4f}"
            log.info(
                f"epoch {epoch}/{seg.max_epochs} loss {row['loss']:.4f} val_iou {shown} "
                f"best {state['best_iou']:.4f}@{state['best_epoch']} {seconds:.1f}s (val {val_seconds:.1f}s, cpu {row['cpu_seconds']:.1f}s)"
            )
        with tempfile.TemporaryDirectory() as folder:
            saved = None
            if rank == 0:
                save_file({k: v.contiguous() for k, v in _cpu_state(net).items()}, os.path.join(folder, WEIGHTS))
                save_file({k: v.contiguous() for k, v in best_state.items()}, os.path.join(folder, BEST))
                if average is not None:
                    save_file({k: v.detach().cpu().contiguous() for k, v in average.state_dict().items()}, os.path.join(folder, AVERAGE))
                torch.save(optimizer.state_dict(), os.path.join(folder, OPTIMIZER))
                Path(folder, STATE).write_text(json.dumps({**state, "workers": workers}))
                saved = ray.train.Checkpoint.from_directory(folder)
            ray.train.report({k: v for k, v in row.items() if v is not None}, checkpoint=saved)


def _validate(net, items: list[dict], seg: SegConfig, device, world: int) -> float | None:
    """Mean IoU over this rank's validation scans, averaged over all ranks (None without validation)."""
    import torch

    net.eval()
    bfloat16 = runs_in_bfloat16(seg.inference_precision, device)
    ious = [
        # No window overlap here: early stopping needs a consistent score, not the last 0.1% of Dice. The
        # network runs as it will at inference (seg.inference_precision).
        iou_dice(predict_logits(_unwrap(net), item["image"][0], seg.patch_size, 0.0, device, bfloat16) > 0, item["label"][0] > 0.5)[0]
        for item in items
    ]
    total = torch.tensor([sum(ious), len(ious)], dtype=torch.float64, device=device)
    if world > 1:
        torch.distributed.all_reduce(total)
    return float(total[0] / total[1]) if total[1] > 0 else None


# --- the driver side -------------------------------------------------------------------------------
def run_training(train_refs: list, val_refs: list, cfg: Config, storage: Path, network: str, kwargs: dict) -> TrainOutcome:
    """Run (or resume, when ``storage`` holds a run) the TorchTrainer; return the best weights and history."""
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig

    import torch
    from ray.train import FailureConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from safetensors.torch import load_file

    from ..runtime import cluster_capacity, free_cpus_on_one_node, plan_train_workers

    live_cpus = ray.cluster_resources().get("CPU", 0)
    plan = plan_train_workers(cluster_capacity(), cfg.resources, free_cpus_on_one_node() if live_cpus >= 1 else 0)
    print(f"segmenter training: {plan}", flush=True)
    if plan.use_gpu:
        # NCCL where this torch has it (every node runs the same image); a CPU-only build holding a
        # GPU resource (the fake autoscaler's) reduces over gloo.
        backend = "nccl" if torch.distributed.is_nccl_available() else "gloo"
        scaling = ScalingConfig(num_workers=plan.num_workers, use_gpu=True, resources_per_worker={"CPU": plan.cpus_per_worker, "GPU": 1})
    else:
        backend = "gloo"
        scaling = ScalingConfig(num_workers=plan.num_workers, use_gpu=False, resources_per_worker={"CPU": plan.cpus_per_worker})
    threads = plan.threads
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "seg": asdict(cfg.seg),
            "network": network,
            "kwargs": kwargs,
            "train_refs": train_refs,
            "val_refs": val_refs,
            "threads": threads,
            # An object ref, not a path: a worker on another node may not see the driver's files.
            "init_state": ray.put(initial_weights(cfg, network, kwargs)) if cfg.seg.init_from else None,
        },
        scaling_config=scaling,
        torch_config=TorchConfig(backend=backend),
        run_config=RunConfig(
            name="segmenter",
            storage_path=str(Path(storage).resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # A lost worker or node restarts the run from its last epoch's checkpoint.
            failure_config=FailureConfig(max_failures=cfg.resources.train_max_failures),
        ),
    )
    start = time.perf_counter()
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"segmenter training under {storage} produced no checkpoint")
    with result.checkpoint.as_directory() as folder:
        state = json.loads((Path(folder) / STATE).read_text())
        best = load_file(str(Path(folder) / BEST))
    return TrainOutcome(
        best_state=best,
        history=state["history"],
        best_epoch=state["best_epoch"],
        best_val_iou=state["best_iou"] if state["best_iou"] >= 0 else None,
        epochs=state["epoch"],
        workers=state.get("workers", []),
        seconds=float(sum(r["seconds"] for r in state["history"])) or time.perf_counter() - start,
    )


def initial_weights(cfg: Config, network: str, kwargs: dict) -> dict:
    """The weights of the segmenter in ``cfg.seg.init_from``, checked to fit this training run: same
    network and shape, and inputs prepared the same way (grid, orientation, normalisation)."""
    folder = cfg.seg.init_from
    card = cards.read_card(folder, cards.SEGMENTER)
    # kwargs as the card stores them (JSON: tuples become lists), so equal settings compare equal
    wanted = {"network": (network, json.loads(json.dumps(kwargs))), "spacing_mm": tuple(cfg.grid.spacing_mm), "orientation": cfg.grid.orientation,
              "clip_percentiles": list(cfg.seg.clip_percentiles)}
    found = {"network": (card.architecture, card.kwargs), "spacing_mm": tuple(card.spacing_mm), "orientation": card["orientation"],
             "clip_percentiles": list(card["normalisation"]["clip_percentiles"])}
    differ = [f"{k} {found[k]} (training uses {wanted[k]})" for k in wanted if found[k] != wanted[k]]
    if differ:
        raise ModelFileError(f"{folder}: cannot start training from this segmenter: " + "; ".join(differ))
    return cards.load_weights(folder)


def put_prepared(pairs, cfg: Config) -> list:
    """Prepare ``(image, mask)`` pairs as parallel Ray tasks; object refs to the training items."""
    import ray

    from .data import prepare_pair

    task = ray.remote(num_cpus=1)(prepare_pair)
    return [task.remote(image, mask, cfg.grid, cfg.seg) for image, mask in pairs]


def fit_segmenter(
    train_pairs: list[tuple[Volume, Volume]],
    val_pairs: list[tuple[Volume, Volume]],
    cfg: Config,
    storage: Path,
    network: str | None = None,
):
    """Train from in-memory ``(image, mask)`` Volumes (the real-anatomy test comes here)."""
    return fit_prepared(put_prepared(train_pairs, cfg), put_prepared(val_pairs, cfg), cfg, storage, network)


def fit_prepared(train_refs: list, val_refs: list, cfg: Config, storage: Path, network: str | None = None):
    """Train from object refs to prepared items; returns ``(best network in eval mode, outcome, (name, kwargs))``."""
    from .networks import check_patch_size, network_spec

    name, kwargs = network_spec(network or cfg.seg.network, cfg.seg)
    check_patch_size(name, cfg.seg.patch_size)
    outcome = run_training(train_refs, val_refs, cfg, storage, name, kwargs)
    net = cards.network(cards.SEGMENTER, name).build(kwargs)
    net.load_state_dict(outcome.best_state)
    return net.eval(), outcome, (name, kwargs)
