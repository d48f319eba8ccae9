"""The bottleneck sweep: one Ray Tune trial per latent size, all running at the same time.

Each trial trains one autoencoder (``autoencode.train.train_autoencoder``, a plain function) on the same
crops and writes ``OUT/bn<k>/`` (weights, card, checkpoint). Resources follow the cluster: a GPU per
trial when there are enough (a share of one when there are fewer GPUs than trials), otherwise an equal
share of the CPUs, fractional if need be, so that four trials on a two-core laptop still run together
rather than queueing behind each other.

Re-running into the same folder resumes: a finished size whose card matches the data and settings is
not trained again, and an interrupted trial continues from its checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..io.cards import CARD_FILE, ModelFileError, data_hash, read_card
from ..io.outputs import crop_frame_of
from ..io.store import read_crops_group, read_disc_crops, write_json_atomic, write_text_atomic, written_groups
from ..runtime import cluster_capacity, init_ray
from ..schema import USABLE_DISC_STATUSES
from .infer import DEFAULT_FILE
from .augment import for_crop_frame
from .train import save_autoencoder, train_autoencoder, utc_now

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.csv"
HISTORY_FILE = "history.csv"  # bn<k>/: one row per epoch (loss, IoUs, seconds)
CURVES_FILE = "sweep.png"  # eval-mode training IoU per epoch of every size
COLUMNS = [
    "bottleneck", "converged", "epochs", "train_iou", "train_iou_ci_low", "train_iou_ci_high", "train_iou_min",
    "heldout_iou", "heldout_iou_ci_low", "heldout_iou_ci_high", "n_train", "n_heldout", "seconds",
    "seconds_per_epoch", "decision_threshold", "started", "ended", "device", "default",
]  # fmt: skip


# --- data ----------------------------------------------------------------------------------------
def load_crops(crop_dirs: list[Path]) -> tuple[np.ndarray, pd.DataFrame]:
    """All usable disc crops of some ``measure``/``run`` output folders, as uint8 ``(n, s, s, s)``,
    with a table (source, scan_id, patient_id, level) giving each row's origin.

    With the folder's ``discs.parquet``, the crops of its usable discs; without it, every crop stored.
    Without a patient id each scan counts as its own patient for the held-out split.
    """
    arrays, tables = [], []
    for folder in map(Path, crop_dirs):
        root = folder / "crops.zarr"
        groups = sorted(written_groups(root))
        if not groups:
            raise FileNotFoundError(f"{folder}: no crops.zarr groups (run `rayspine measure` first)")
        if (folder / "discs.parquet").is_file():
            table = pd.read_parquet(folder / "discs.parquet")
            wanted = table[table["status"].isin(USABLE_DISC_STATUSES) & table["crop_index"].notna() & (table["crop_index"] >= 0)]
            wanted = wanted.sort_values(["scan_id", "crop_index"], kind="stable")
            if not len(wanted):
                continue
            arrays.append(read_disc_crops(root, wanted))
            patients = wanted["patient_id"] if "patient_id" in wanted else pd.Series(None, index=wanted.index)
            patients = [str(p) if p is not None and pd.notna(p) else s for p, s in zip(patients, wanted["scan_id"])]
            tables.append(pd.DataFrame({"source": str(folder), "scan_id": wanted["scan_id"].to_numpy(), "patient_id": patients,
                                        "level": wanted["level"].astype(int).to_numpy()}))
        else:
            for key in groups:
                crops, levels, scan_ids = read_crops_group(root, key)
                arrays.append(np.asarray(crops, dtype=np.uint8))
                tables.append(pd.DataFrame({"source": str(folder), "scan_id": scan_ids, "patient_id": scan_ids, "level": [int(v) for v in levels]}))
    if not tables or not sum(len(t) for t in tables):
        raise ValueError(f"no usable disc crops in {[str(d) for d in crop_dirs]}")
    return np.concatenate(arrays), pd.concat(tables, ignore_index=True)


def crops_frame(crop_dirs: list[Path]) -> str:
    """The one frame the crops of ``crop_dirs`` were made in (``DiscConfig.crop_frame``): a model learns
    one, and crops of another would reach it as discs it never saw. Mixed frames are refused."""
    frames = {str(folder): crop_frame_of(Path(folder)) for folder in crop_dirs}
    if len(set(frames.values())) > 1:
        raise ValueError(f"crops made in different frames (discs.crop_frame): {frames}; measure them all with one")
    return next(iter(frames.values()))


def split_heldout(meta: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: whole patients, in a seeded random order, until ``fraction`` of
    the discs is reached (discs of one patient on both sides would flatter the held-out IoU)."""
    held = np.zeros(len(meta), dtype=bool)
    if fraction <= 0:
        return held
    patients = meta["patient_id"].astype(str).to_numpy()
    order = np.random.default_rng(seed).permutation(np.unique(patients))
    target = fraction * len(meta)
    for patient in order:
        if held.sum() >= target:
            break
        candidate = held | (patients == patient)
        if candidate.all():  # never hold out every disc
            break
        held = candidate
    return held


# --- resources -----------------------------------------------------------------------------------
def trial_resources(n_trials: int, cluster: dict, node_cpus: float | None = None, use_gpu: bool | None = None) -> tuple[dict, int]:
    """Ray resources per trial and the torch thread count to go with them, so all trials fit at once
    (and no trial asks for more CPUs than its largest node has).

    ``cluster`` is what the cluster can grow to (``runtime.cluster_capacity``): on an autoscaling
    cluster the trials' GPU requests are what make the autoscaler launch GPU nodes. ``use_gpu``
    False keeps them on CPUs, True asks for GPUs the program cannot see.
    """
    gpus = float(cluster.get("GPU", 0))
    cpus = float(cluster.get("CPU", 1))
    if use_gpu is False:
        gpus = 0.0
    elif use_gpu:
        gpus = max(gpus, 1.0)
    if gpus >= 1:
        # One GPU per trial when there are enough; otherwise an equal share (this network is small).
        gpu = 1.0 if gpus >= n_trials else math.floor(gpus / n_trials * 1e4) / 1e4
        cpu = max(0.1, min(1.0, math.floor(cpus / n_trials * 1e4) / 1e4))
        return {"cpu": cpu, "gpu": gpu}, max(1, int(cpu))
    share = min(math.floor(cpus / n_trials * 1e4) / 1e4, node_cpus or cpus)
    if share >= 1:
        return {"cpu": float(int(share))}, int(share)
    return {"cpu": max(share, 0.01)}, 1  # fractional: trials share cores, one torch thread each


# --- the trial -----------------------------------------------------------------------------------
def _trial(config: dict, train=None, heldout=None, ae=None, out: str = "", spacing=(), crop_frame: str = "scan", digest: str = "", threads: int = 1) -> None:
    """One Tune trial: train the autoencoder of ``config['bottleneck']`` and write OUT/bn<k>/."""
    import ray
    import torch
    from ray import tune

    trial_started = utc_now()
    # Where the trial ran and what it held, for the card: on a cluster, a GPU node and its GPU.
    placement = {"node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}
    torch.set_num_threads(int(threads))
    k = int(config["bottleneck"])
    folder = Path(out) / f"bn{k}"
    result = train_autoencoder(train, k, ae, out_dir=folder, heldout=heldout, progress=tune.report)
    save_autoencoder(
        result,
        folder,
        spacing_mm=spacing,
        config_digest=digest,
        extra={"ae_config": jsonable_config(ae), "crop_frame": crop_frame, "trial_started": trial_started, "trial_ended": utc_now(), "threads": int(threads), **placement},
    )
    write_text_atomic(pd.DataFrame(result.history).to_csv(index=False), folder / HISTORY_FILE)  # the epoch curve
    tune.report({"bottleneck": k, "done": True, **result.metrics()})


def jsonable_config(ae) -> dict:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(ae).items()}


def _finished(folder: Path, digest: str, ae_json: dict) -> bool:
    """A bn<k>/ folder whose card says it was trained on these crops with these settings."""
    if not (folder / CARD_FILE).is_file():
        return False
    try:
        card = read_card(folder)
    except ModelFileError:
        return False
    same = card.data_hash == digest and card.get("ae_config", {}) == ae_json
    return bool(same)


# --- the sweep -----------------------------------------------------------------------------------
def run_sweep(crop_dirs: list[Path], out: Path, cfg: Config, overwrite: bool = False) -> pd.DataFrame:
    """Train one autoencoder per ``cfg.ae.bottlenecks`` in parallel Ray Tune trials.

    Writes ``out/sweep.csv`` (one row per size), ``out/bn<k>/`` (model.safetensors, model.json,
    checkpoint.pt) and ``out/default.json`` naming the default model: the smallest size that converged,
    else the one with the best training IoU (marked ``converged: false``).
    """
    from ray import tune

    out = Path(out).resolve()
    if overwrite and out.exists():
        _clear(out, cfg.ae.bottlenecks)
    out.mkdir(parents=True, exist_ok=True)

    frame = crops_frame(crop_dirs)
    ae = for_crop_frame(cfg.ae, frame)  # what training uses; the card keeps the digest of the user's settings
    crops, meta = load_crops(crop_dirs)
    held = split_heldout(meta, ae.heldout_fraction, ae.seed)
    train, heldout = crops[~held], (crops[held] if held.any() else None)
    digest = data_hash(train, heldout)
    ae_json = jsonable_config(ae)
    meta.assign(heldout=held).to_csv(out / "discs_used.csv", index=False)
    log.info("sweep: %d training discs, %d held out, bottlenecks %s", len(train), int(held.sum()), cfg.ae.bottlenecks)

    todo = [k for k in cfg.ae.bottlenecks if not _finished(out / f"bn{k}", digest, ae_json)]
    if todo:
        init_ray()  # joins the cluster of RAY_ADDRESS, else a local Ray (no-op when already connected)
        capacity = cluster_capacity()
        resources, threads = trial_resources(len(todo), {"CPU": capacity.cpus, "GPU": capacity.gpus}, capacity.node_cpus, cfg.resources.use_gpu)
        log.info("sweep: %d trials at once, each %s, %d torch thread(s)", len(todo), resources, threads)
        trainable = tune.with_parameters(
            _trial,
            train=train,
            heldout=heldout,
            ae=ae,
            out=str(out),
            spacing=tuple(cfg.grid.spacing_mm),
            crop_frame=frame,
            digest=cfg.digest(),
            threads=threads,
        )
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space={"bottleneck": tune.grid_search(list(todo))},
            tune_config=tune.TuneConfig(max_concurrent_trials=len(todo)),
            run_config=tune.RunConfig(
                name="sweep",
                storage_path=str(out / "tune"),
                # A failed trial restarts and resumes from its own checkpoint in OUT/bn<k>/.
                failure_config=tune.FailureConfig(max_failures=2),
                verbose=0,
            ),
        )
        started = time.perf_counter()
        grid = tuner.fit()
        errors = [str(r.error) for r in grid if r.error is not None]
        if errors:
            raise RuntimeError(f"{len(errors)} sweep trial(s) failed: {errors[0]}")
        log.info("sweep: trials done in %.1f s", time.perf_counter() - started)
    return write_sweep_table(out, cfg.ae.bottlenecks)


def write_sweep_table(out: Path, bottlenecks) -> pd.DataFrame:
    """sweep.csv and default.json from the bn<k>/ cards."""
    rows = []
    for k in bottlenecks:
        card = read_card(Path(out) / f"bn{k}")
        metrics = card.metrics
        rows.append(
            {
                **{c: metrics.get(c) for c in COLUMNS if c in metrics},
                "bottleneck": int(k),
                # The trial's own start and end (process start to card written): overlapping intervals
                # show the trials ran at the same time.
                "started": card.get("trial_started", metrics.get("started")),
                "ended": card.get("trial_ended", metrics.get("ended")),
            }
        )
    table = pd.DataFrame(rows)
    converged = table[table["converged"]]
    if len(converged):
        best = converged.sort_values("bottleneck").iloc[0]
        reason = "smallest bottleneck whose eval-mode training IoU exceeded the target"
    else:
        best = table.sort_values(["train_iou", "bottleneck"], ascending=[False, True]).iloc[0]
        reason = "no bottleneck converged: the one with the best eval-mode training IoU"
    table["default"] = table["bottleneck"] == best["bottleneck"]
    table = table[[c for c in COLUMNS if c in table.columns]]
    write_text_atomic(table.to_csv(index=False), Path(out) / SWEEP_FILE)
    write_json_atomic(
        {
            "model": f"bn{int(best['bottleneck'])}",
            "bottleneck": int(best["bottleneck"]),
            "converged": bool(best["converged"]),
            "train_iou": float(best["train_iou"]),
            "reason": reason,
        },
        Path(out) / DEFAULT_FILE,
    )
    if not len(converged):
        log.warning("sweep: %s (bn%d, IoU %.4f)", reason, int(best["bottleneck"]), float(best["train_iou"]))
    histories = {int(k): pd.read_csv(Path(out) / f"bn{k}" / HISTORY_FILE) for k in bottlenecks if (Path(out) / f"bn{k}" / HISTORY_FILE).is_file()}
    if histories:
        from ..report import figures

        target = read_card(Path(out) / f"bn{int(best['bottleneck'])}").get("ae_config", {}).get("target_iou")
        figures.save(figures.training_curves(histories, target), Path(out) / CURVES_FILE)
    return table


def _clear(out: Path, bottlenecks) -> None:
    """--overwrite: remove what a sweep wrote (and nothing else in the folder)."""
    for name in (SWEEP_FILE, DEFAULT_FILE, "discs_used.csv"):
        (out / name).unlink(missing_ok=True)
    for path in [out / "tune", *out.glob("bn*")]:
        if path.is_dir() and (path.name == "tune" or path.name[2:].isdigit()):
            shutil.rmtree(path)


def read_default(out: Path) -> dict:
    return json.loads((Path(out) / DEFAULT_FILE).read_text())
