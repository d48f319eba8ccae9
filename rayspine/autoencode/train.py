"""Training and scoring of the disc autoencoder (the networks are in ``networks/``; loading, encoding
and decoding a trained one in ``infer.py``, which imports nothing from here).

Convergence is judged the way the model is used: IoU between each training crop and its thresholded
reconstruction, over the whole training set, with the network in **eval mode** (batch norm on its
running statistics). In training mode batch norm normalises each batch with that batch's own statistics,
so a disc's reconstruction depends on the other discs in its batch; a rule read off training-mode
batches can report 0.995 while the same weights score a disc alone at 0.8. Here a disc scored alone
and in a batch gives the same code and the same IoU.

Crops stay ``uint8`` until a batch is formed (a 64^3 crop is 256 KiB as uint8, 1 MiB as float32).
Training is a plain function with no Ray inside; ``sweep.py`` runs one call per Ray Tune trial.
``save_autoencoder`` writes what it made as a model folder.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import AEConfig
from ..io.cards import AUTOENCODER, ModelCard, data_hash, network, save_model
from ..io.store import atomic_path
from ..stats import iou_per_item, mean_t_ci
from .augment import augment_batch
from .infer import check_crops, to_batch, torch_device
from .networks import ShapeAutoencoder

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


# --- scoring ------------------------------------------------------------------------------------
def evaluate_iou(net: ShapeAutoencoder, crops: np.ndarray, batch_size: int = 16, device=None, channels_last: bool = True) -> np.ndarray:
    """Per-disc IoU of input and thresholded reconstruction, in eval mode (batch norm on running stats)."""
    device = torch_device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    out = np.empty(len(crops), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            batch = crops[start : start + batch_size]
            logits = net(to_batch(batch, device, channels_last))[:, 0].float().cpu().numpy()
            # logit > 0 is sigmoid > 0.5: no sigmoid needed to threshold. Counted in numpy: torch's
            # boolean reductions on CPU are an order of magnitude slower.
            out[start : start + len(batch)] = iou_per_item(batch, logits > 0)
    net.train(was_training)
    return out


# Candidate probabilities for the mask's decision boundary (calibrate_threshold), 0.5 among them.
DECISION_THRESHOLDS = tuple(round(0.3 + 0.025 * i, 3) for i in range(17))  # 0.300 ... 0.700


def calibrate_threshold(net: ShapeAutoencoder, crops: np.ndarray, batch_size: int = 16, device=None, channels_last: bool = True) -> tuple[float, np.ndarray]:
    """Move the network's decision boundary to the probability (of ``DECISION_THRESHOLDS``) whose masks
    have the highest mean eval-mode IoU with ``crops`` (the training crops); returns it and the per-crop
    IoU there (what ``evaluate_iou`` now gives, without a second pass).

    Trained with BCE, the reconstruction of a disc a few voxels thick puts its boundary voxels just
    under 0.5 (masks at 0.5 hold ~96 % of the disc's volume on the 190 real discs); a threshold picked
    on the training discs alone gains ~0.003 IoU on unseen people (bench/ae_heldout.md). A tie keeps
    the candidate nearest 0.5, so a network that needs no move is left as it is."""
    device = torch_device(device) if device is not None else next(net.parameters()).device
    cuts = np.log(np.array(DECISION_THRESHOLDS) / (1 - np.array(DECISION_THRESHOLDS)))  # as logits
    iou = np.empty((len(cuts), len(crops)))
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            batch = crops[start : start + batch_size]
            logits = net(to_batch(batch, device, channels_last))[:, 0].float().cpu().numpy()
            iou[:, start : start + len(batch)] = [iou_per_item(batch, logits > cut) for cut in cuts]
    net.train(was_training)
    mean = iou.mean(axis=1).round(9)
    best = min(range(len(cuts)), key=lambda i: (-mean[i], abs(DECISION_THRESHOLDS[i] - 0.5)))
    threshold = DECISION_THRESHOLDS[best]
    if threshold != 0.5:
        net.move_decision_boundary(threshold)
    return threshold, iou[best]


def recalibrate_batch_norm(net: ShapeAutoencoder, crops: np.ndarray, batch_size: int = 16, device=None, channels_last: bool = True) -> None:
    """Set every batch norm's running statistics to their average over the whole training set.

    The running statistics that eval mode uses are otherwise an exponential average over the last ten
    or so batches of four, taken while the weights were still moving; their noise shows up directly as
    eval-mode IoU that lags and jitters behind the training-mode figure. One no-grad pass over the crops
    with a cumulative average (momentum None) gives the statistics of the current weights ("precise BN").
    """
    device = next(net.parameters()).device if device is None else torch_device(device)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = net.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        for start in range(0, len(crops), batch_size):
            net(to_batch(crops[start : start + batch_size], device, channels_last))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    net.train(was_training)


# --- training ------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    net: ShapeAutoencoder  # final weights, eval mode, on the CPU
    bottleneck: int
    converged: bool
    epochs: int  # epochs trained in all (including those of an interrupted run that was resumed)
    train_iou: np.ndarray  # per training disc, eval mode, final weights
    heldout_iou: np.ndarray | None  # per held-out disc, or None
    history: list[dict] = field(default_factory=list)  # one dict per epoch: loss, IoUs, seconds
    seconds: float = 0.0  # training time in all runs
    started: str = ""  # ISO time this run began (UTC)
    ended: str = ""
    resumed_epoch: int = 0  # epoch the checkpoint restored (0: fresh start)
    data_hash: str = ""
    device: str = "cpu"
    decision_threshold: float = 0.5  # the trained network's probability that logits > 0 now marks

    def metrics(self) -> dict:
        mean, low, high = mean_t_ci(self.train_iou)
        h = mean_t_ci(self.heldout_iou) if self.heldout_iou is not None else (float("nan"),) * 3
        return {
            "converged": bool(self.converged),
            "epochs": int(self.epochs),
            "train_iou": mean,
            "train_iou_ci_low": low,
            "train_iou_ci_high": high,
            "train_iou_min": float(np.min(self.train_iou)) if len(self.train_iou) else float("nan"),
            "heldout_iou": h[0],
            "heldout_iou_ci_low": h[1],
            "heldout_iou_ci_high": h[2],
            "n_train": int(len(self.train_iou)),
            "n_heldout": int(len(self.heldout_iou)) if self.heldout_iou is not None else 0,
            "seconds": float(self.seconds),
            "seconds_per_epoch": float(self.seconds / max(1, self.epochs)),
            "decision_threshold": float(self.decision_threshold),  # of the trained weights, now at logits > 0
            "started": self.started,
            "ended": self.ended,
            "device": self.device,
        }


def utc_now() -> str:
    """ISO time now (UTC, milliseconds), for the start and end of runs."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def train_autoencoder(
    crops: np.ndarray,
    bottleneck: int,
    cfg: AEConfig,
    out_dir: Path | None = None,
    heldout: np.ndarray | None = None,
    progress: Callable[[dict], None] | None = None,
    device=None,
    validation: np.ndarray | None = None,
) -> TrainResult:
    """Train one autoencoder of the given bottleneck on binary crops until eval-mode IoU > target.

    Each epoch: one pass of Adam on BCE-with-logits over shuffled batches of ``cfg.batch_size``, then
    the IoU of every training crop (and held-out crop) in eval mode. It stops when the mean training IoU
    exceeds ``cfg.target_iou`` (converged), or after ``cfg.max_epochs`` or ``cfg.max_minutes`` of training
    (not converged). Then, with ``cfg.calibrate_threshold``, the mask's threshold is fitted to the training
    crops (``calibrate_threshold``; the returned IoUs are at it, the history's at 0.5). With ``out_dir``
    a checkpoint is kept there and a later call with the same data and settings resumes from it.
    ``progress`` is called with each epoch's metrics (the Tune trial reports them).
    The shuffle of epoch e depends only on ``(seed, e)``, so a resumed run retraces a fresh one.

    ``validation`` crops (other people than the training ones) are scored every epoch too
    (``val_iou`` in the history); with ``cfg.val_patience > 0`` training stops once that many epochs
    pass without a better mean validation IoU, and the weights of the best epoch are returned (with
    ``train_iou``/``heldout_iou`` of that epoch). Early-stopped runs keep no checkpoint to resume.
    """
    crops = np.asarray(crops)
    crops = check_crops(crops, crops.shape[1] if crops.ndim == 4 else 64)
    size = crops.shape[1]
    heldout = check_crops(heldout, size) if heldout is not None and len(heldout) else None
    validation = check_crops(validation, size) if validation is not None and len(validation) else None
    early_stop = validation is not None and cfg.val_patience > 0
    if len(crops) == 0:
        raise ValueError("no training crops")
    device = torch_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True  # cheap for these small convs
    channels_last = bool(cfg.channels_last)
    digest = data_hash(crops, heldout) if validation is None else data_hash(crops, heldout, validation)
    settings = {"bottleneck": int(bottleneck), "data_hash": digest, "cfg": _training_settings(cfg)}

    torch.manual_seed(cfg.seed)
    net = network(AUTOENCODER, cfg.model)(bottleneck, channels=cfg.channels, crop_size=size).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    if cfg.weight_decay > 0:
        optimiser = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    else:
        optimiser = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    # Optional: halve the learning rate when the eval-mode training IoU stops improving. At a constant
    # rate Adam keeps jittering the weights by more than the last fraction of a percent of IoU needs.
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="max", factor=0.5, patience=cfg.lr_patience, min_lr=cfg.learning_rate / 64)
        if cfg.lr_patience > 0
        else None
    )
    # Optional: a fixed cosine decay from learning_rate to 0 over max_epochs (stepped once per epoch).
    # Unlike the plateau rule it does not wait for the training IoU to stall, which within a budget of
    # tens of epochs it never does; the small steps at the end settle the weights the run returns.
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, cfg.max_epochs)) if cfg.lr_cosine else None
    loss_of = torch.compile(net.loss) if cfg.compile else net.loss
    amp = device.type == "cuda" and cfg.amp

    history: list[dict] = []
    epoch, seconds_before, converged = 0, 0.0, False
    train_iou, heldout_iou = np.zeros(0), None
    ckpt_path = Path(out_dir) / CHECKPOINT_FILE if out_dir is not None and not early_stop else None
    best = {"val": -1.0, "epoch": 0, "state": None, "train_iou": None, "heldout_iou": None}
    if ckpt_path is not None and ckpt_path.is_file():
        state = _load_checkpoint(ckpt_path, settings)
        if state is not None:
            net.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            if scheduler is not None and state.get("scheduler"):
                scheduler.load_state_dict(state["scheduler"])
            if cosine is not None and state.get("cosine"):
                cosine.load_state_dict(state["cosine"])
            history = state["history"]
            epoch = len(history)
            seconds_before = float(history[-1]["seconds"]) if history else 0.0
            converged = bool(state["converged"])
            train_iou = state["train_iou"].numpy()
            heldout_iou = state["heldout_iou"].numpy() if state["heldout_iou"] is not None else None
            log.info("bottleneck %d: resumed at epoch %d from %s", bottleneck, epoch, ckpt_path)
    resumed_epoch = epoch
    scored_epoch = epoch  # the epoch whose weights train_iou / heldout_iou score
    started, clock, cpu_clock = utc_now(), time.perf_counter(), time.process_time()
    last_save = clock

    budget = 60 * cfg.max_minutes if cfg.max_minutes > 0 else float("inf")
    # Time is checked at the end of each epoch, so a call with budget left trains at least one epoch
    # however slowly it got here (a busy machine once made a 60 us budget expire before the first).
    spent = seconds_before
    while not converged and epoch < cfg.max_epochs and spent < budget:
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(crops))
        net.train()
        losses = []
        for start in range(0, len(order), cfg.batch_size):
            idx = np.sort(order[start : start + cfg.batch_size])
            batch = crops[idx]
            batch = augment_batch(batch, rng, cfg.augment, cfg.augment_shift, cfg.augment_rotate_deg, cfg.augment_scale)  # as is if all off
            x = to_batch(batch, device, channels_last)
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_of(x)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        epoch += 1
        # Scoring every crop in eval mode costs about a third of an epoch's CPU; with eval_every > 1 it
        # runs on every n-th epoch and the last one only (the last always: its scores are the result).
        # The weights do not depend on it (eval mode, no randomness), so the trajectory is the same.
        last = epoch >= cfg.max_epochs or seconds_before + time.perf_counter() - clock >= budget
        scored = last or epoch % max(1, cfg.eval_every) == 0
        stop_early = False
        if scored:
            scored_epoch = epoch
            if cfg.precise_bn:
                recalibrate_batch_norm(net, crops, cfg.eval_batch_size, device, channels_last)
            train_iou = evaluate_iou(net, crops, cfg.eval_batch_size, device, channels_last)
            heldout_iou = evaluate_iou(net, heldout, cfg.eval_batch_size, device, channels_last) if heldout is not None else None
            converged = bool(train_iou.mean() > cfg.target_iou)
            val_iou = evaluate_iou(net, validation, cfg.eval_batch_size, device, channels_last) if validation is not None else None
            if early_stop:
                if float(val_iou.mean()) > best["val"]:
                    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    best.update(val=float(val_iou.mean()), epoch=epoch, state=state, train_iou=train_iou, heldout_iou=heldout_iou)
                stop_early = epoch - best["epoch"] >= cfg.val_patience
            if scheduler is not None:  # its patience counts scored epochs
                scheduler.step(float(train_iou.mean()))
        if cosine is not None:
            cosine.step()
        nan = float("nan")
        record = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "train_iou": float(train_iou.mean()) if scored else nan,
            "train_iou_min": float(train_iou.min()) if scored else nan,
            "heldout_iou": float(heldout_iou.mean()) if scored and heldout_iou is not None else nan,
            "val_iou": float(val_iou.mean()) if scored and val_iou is not None else nan,
            "seconds": seconds_before + time.perf_counter() - clock,
            "cpu_seconds": time.process_time() - cpu_clock,  # this process, since this call began
            "learning_rate": float(optimiser.param_groups[0]["lr"]),  # for the next epoch
            "converged": converged,
        }
        history.append(record)
        spent = record["seconds"]
        if progress is not None:
            progress(dict(record, bottleneck=int(bottleneck)))
        now = time.perf_counter()
        out_of_time = record["seconds"] >= budget
        done = converged or epoch >= cfg.max_epochs or out_of_time
        if ckpt_path is not None and (done or now - last_save >= cfg.checkpoint_seconds):
            _save_checkpoint(ckpt_path, net, optimiser, scheduler, history, converged, train_iou, heldout_iou, settings, cosine)
            last_save = now
        if stop_early:
            log.info("bottleneck %d: no better validation IoU for %d epochs, stopped at %d", bottleneck, cfg.val_patience, epoch)
            break
    if early_stop and best["state"] is not None:  # the weights of the best validation epoch
        net.load_state_dict(best["state"])
        train_iou, heldout_iou = best["train_iou"], best["heldout_iou"]
        converged = bool(train_iou.mean() > cfg.target_iou)
    if not converged and seconds_before + time.perf_counter() - clock >= budget:
        log.info("bottleneck %d: time budget of %.1f min spent at epoch %d", bottleneck, cfg.max_minutes, epoch)

    restored_best = early_stop and best["state"] is not None
    if len(train_iou) == 0 or (scored_epoch != epoch and not restored_best):
        # max_epochs == 0 (the untrained network), or the time budget ran out after an unscored epoch
        train_iou = evaluate_iou(net, crops, cfg.eval_batch_size, device, channels_last)
        heldout_iou = evaluate_iou(net, heldout, cfg.eval_batch_size, device, channels_last) if heldout is not None else None
        converged = bool(train_iou.mean() > cfg.target_iou)
    threshold = 0.5
    if cfg.calibrate_threshold:  # after the last checkpoint: a resumed run calibrates the same weights
        threshold, train_iou = calibrate_threshold(net, crops, cfg.eval_batch_size, device, channels_last)
        if threshold != 0.5:
            heldout_iou = evaluate_iou(net, heldout, cfg.eval_batch_size, device, channels_last) if heldout is not None else None
    net.eval()
    return TrainResult(
        net=net.cpu().to(memory_format=torch.contiguous_format),
        bottleneck=int(bottleneck),
        converged=converged,
        epochs=epoch,
        train_iou=train_iou,
        heldout_iou=heldout_iou,
        history=history,
        seconds=seconds_before + time.perf_counter() - clock,
        started=started,
        ended=utc_now(),
        resumed_epoch=resumed_epoch,
        data_hash=digest,
        device=str(device),
        decision_threshold=threshold,
    )


def _training_settings(cfg: AEConfig) -> dict:
    """The settings that change the weights; a checkpoint made with others is not resumed."""
    keep = ("model", "channels", "batch_size", "learning_rate", "augment", "seed", "target_iou", "precise_bn", "lr_patience")
    keep += tuple(k for k in ("weight_decay", "val_patience", "augment_shift", "augment_rotate_deg", "augment_scale", "lr_cosine") if getattr(cfg, k))  # only when set
    if cfg.lr_cosine:
        keep += ("max_epochs",)  # the cosine's length: another max_epochs is another learning-rate curve
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k in keep}


def _save_checkpoint(path: Path, net, optimiser, scheduler, history, converged, train_iou, heldout_iou, settings, cosine=None) -> None:
    state = {
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimiser": optimiser.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "cosine": cosine.state_dict() if cosine is not None else {},
        "history": history,
        "converged": converged,
        "train_iou": torch.from_numpy(np.asarray(train_iou, dtype=np.float64)),
        "heldout_iou": torch.from_numpy(np.asarray(heldout_iou, dtype=np.float64)) if heldout_iou is not None else None,
        "settings_json": json.dumps(settings, sort_keys=True),
    }
    with atomic_path(path) as tmp:  # a checkpoint is whole or absent, never half-written
        torch.save(state, tmp)


def _load_checkpoint(path: Path, settings: dict) -> dict | None:
    try:
        # weights_only: plain tensors, numbers, strings, lists and dicts; never arbitrary objects.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - an unreadable checkpoint means starting afresh, said loudly
        log.warning("%s: unreadable checkpoint, starting afresh (%s)", path, err)
        return None
    if state.get("settings_json") != json.dumps(settings, sort_keys=True):
        log.warning("%s: checkpoint made with other data or settings, starting afresh", path)
        return None
    return state


def save_autoencoder(result: TrainResult, folder: Path, spacing_mm, config_digest: str = "", extra: dict | None = None) -> Path:
    """Weights and model card of a trained autoencoder in ``folder`` (model.safetensors + model.json)."""
    net = result.net
    card = ModelCard(
        kind=AUTOENCODER,
        architecture=type(net).network_name,
        kwargs=net.kwargs(),
        spacing_mm=tuple(float(s) for s in spacing_mm),
        metrics=result.metrics(),
        data_hash=result.data_hash,
        config_digest=config_digest,
        fields={
            "bottleneck": net.bottleneck,
            "crop_size": net.crop_size,
            "input": "binary disc crop, uint8 0/1, centred at the disc's centre of mass",
            "output": "logits; sigmoid once at inference, mask = probability > 0.5 (metrics: decision_threshold)",
            "torch": torch.__version__,
            **(extra or {}),
        },
    )
    return save_model(folder, net.state_dict(), card)

