"""Disc segmentation: the ``Segmenter`` used for inference, and ``train_segmenter`` (``rayspine train-seg``).

``Segmenter.predict`` takes a scan on its own grid and returns the binary disc foreground on that same
grid: the scan is prepared exactly as in training (canonical LPS, target spacing, robust normalisation),
segmented by sliding windows, and the probability map is resampled back (linear, then thresholded).
Instances and levels are found later (``rayspine.discs``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from .config import Config, DiscConfig
from .discs import kept_foreground
from .io.models import CARD_FILE, WEIGHTS_FILE, ModelFileError, load_card, load_weights, save_model
from .io.store import write_json_atomic
from .preprocess import to_scan_grid
from .seg_data import data_hash, disc_foreground, prepare_image, prepare_pair, split_patients
from .seg_train import TrainOutcome, fit_prepared, iou_dice, predict_logits
from .volume import Volume

log = logging.getLogger(__name__)

CARD_KIND = "segmenter"
METRICS_FILE = "metrics.json"
CARD_REQUIRED = ("kind", "architecture", "orientation", "spacing_mm", "normalisation", "patch_size")


class Segmenter:
    """A trained network with the preprocessing its card prescribes; load once, predict per scan."""

    def __init__(self, net, card: dict, device: str | None = None):
        import torch

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = net.to(self.device).eval()
        self.card = card

    @classmethod
    def load(cls, model_dir: str | Path, device: str | None = None) -> Segmenter:
        """Validate the card, rebuild the network it names and load its safetensors weights."""
        from .nets import build_from_spec

        card = load_card(model_dir, required=CARD_REQUIRED)
        if card["kind"] != CARD_KIND:
            raise ModelFileError(f"{model_dir}: model card is for a {card['kind']!r}, not a {CARD_KIND}")
        arch = card["architecture"]
        if not isinstance(arch, dict) or not isinstance(arch.get("kwargs"), dict):
            raise ModelFileError(f"{model_dir}: card architecture must be {{'name': ..., 'kwargs': {{...}}}}")
        try:
            net = build_from_spec(arch.get("name"), arch["kwargs"])
            net.load_state_dict(load_weights(model_dir))
        except (TypeError, ValueError, RuntimeError) as err:
            raise ModelFileError(f"{model_dir}: weights do not fit the card's network ({str(err).splitlines()[0]})") from None
        return cls(net, card, device)

    def logits(self, prepared: Volume) -> Volume:
        """Sliding-window logits on the network's grid for an input made by ``prepare_input``."""
        card = self.card
        logits = predict_logits(self.net, prepared.voxels, card["patch_size"], card.get("sw_overlap", 0.25), self.device)
        return prepared.with_voxels(logits)

    def predict(self, volume: Volume) -> Volume:
        """Binary uint8 disc foreground (0/1) with the input's shape, spacing, origin and direction."""
        return mask_from_logits(self.card, self.logits(prepare_input(self.card, volume)), volume)


# The steps before and after the network need only the card, not the weights, so the pipeline runs
# them as CPU tasks and keeps the model actors (GPUs on a cluster) busy with the network alone.
def prepare_input(card: dict, volume: Volume) -> Volume:
    """The network's input for a scan: canonical orientation and spacing, normalised as in training."""
    return prepare_image(volume, card["spacing_mm"], card["normalisation"]["clip_percentiles"], card["orientation"])


def mask_from_logits(card: dict, logits: Volume, reference: Volume) -> Volume:
    """Binary uint8 foreground on ``reference``'s grid: probabilities resampled back (linear), then thresholded.

    Thresholding after the way back keeps sub-voxel boundaries on thick-slice scans. Only
    ``reference``'s grid and shape are used, never its voxels.
    """
    prob = (1.0 / (1.0 + np.exp(-np.clip(logits.voxels, -50, 50)))).astype(np.float32)
    back = to_scan_grid(logits.with_voxels(prob), reference, interpolation="linear").voxels
    return reference.with_voxels((back > float(card.get("threshold", 0.5))).astype(np.uint8))


def make_card(name: str, kwargs: dict, cfg: Config, **extra) -> dict:
    """The model card: how to rebuild the network and prepare its input, and where it came from."""
    return {
        "kind": CARD_KIND,
        "architecture": {"name": name, "kwargs": kwargs},
        "orientation": cfg.grid.orientation,
        "spacing_mm": list(cfg.grid.spacing_mm),
        "normalisation": {"method": "percentile_clip_then_zscore", "clip_percentiles": list(cfg.seg.clip_percentiles)},
        "patch_size": list(cfg.seg.patch_size),
        "sw_overlap": cfg.seg.sw_overlap,
        "threshold": cfg.seg.threshold,
        "foreground": "disc labels 201..225 (SPIDER)",
        "output": "logits, one channel",
        "config_digest": cfg.digest(),
        **extra,
    }


def evaluate(segmenter: Segmenter, pairs, disc_cfg: DiscConfig = DiscConfig()) -> list[dict]:
    """Per-scan IoU and Dice on each scan's own grid: ``pairs`` yields ``(scan_id, image, mask)``.

    ``iou``/``dice`` score the network's mask; ``dice_discs`` scores what measurement keeps of it, the
    disc instances (``discs.kept_foreground``: pieces too small to be a disc dropped).
    """
    rows = []
    for scan_id, image, mask in pairs:
        start = time.perf_counter()
        pred = segmenter.predict(image)
        truth = disc_foreground(mask.voxels)
        iou, dice = iou_dice(pred.voxels, truth)
        dice_discs = iou_dice(kept_foreground(pred.voxels, pred.spacing, disc_cfg), truth)[1]
        rows.append({"scan_id": scan_id, "iou": iou, "dice": dice, "dice_discs": dice_discs, "seconds": time.perf_counter() - start})
    return rows


def mean_ci(values, seed: int = 0, n_resamples: int = 2000) -> dict:
    """Mean with a 95% percentile-bootstrap confidence interval over scans (SciPy)."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    if values.size == 1 or np.ptp(values) == 0:
        return {"mean": float(values.mean()), "ci95": [float(values.mean())] * 2, "n": int(values.size)}
    res = bootstrap((values,), np.mean, n_resamples=n_resamples, method="percentile", random_state=seed)
    return {"mean": float(values.mean()), "ci95": [float(res.confidence_interval.low), float(res.confidence_interval.high)], "n": int(values.size)}


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _file_bytes(path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size


def _prepare_files(image_path: str, mask_path: str, cfg: Config):
    """Ray task body: read one scan and its mask and prepare them; ``(problem, item)``."""
    from .io.scans import ScanError, read_scan

    try:
        image = read_scan(image_path, cfg.limits)
        mask = read_scan(mask_path, cfg.limits, check_voxels=False)
        return "", prepare_pair(image, mask, cfg.grid, cfg.seg)
    except (ScanError, ValueError) as err:
        return str(err), None


def _prepared_refs(rows, cfg: Config) -> list:
    """Prepare training scans as parallel Ray tasks; refs to the good ones (bad ones are logged, skipped)."""
    import ray

    task = ray.remote(num_cpus=1, num_returns=2)(_prepare_files)
    pending = [(row.scan_id, *task.remote(row.image_path, row.mask_path, cfg)) for row in rows]
    kept = []
    for scan_id, problem, item in pending:
        message = ray.get(problem)
        if message:
            log.warning("training scan %s skipped: %s", scan_id, message)
        else:
            kept.append(item)
    return kept


def train_segmenter(archive: Path, out: Path, cfg: Config, test_site: str | None = None, overwrite: bool = False) -> dict:
    """Train on an archive with masks (Ray Train), test on held-out patients or a held-out site.

    Writes ``out/model.safetensors``, ``out/model.json`` and ``out/metrics.json``; Ray Train's run
    lives in ``out/ray_results`` so an interrupted call resumes. A finished model folder is left as
    it is (its metrics are returned) unless ``overwrite``.
    """
    import json

    from .io.archive import index_archive
    from .io.scans import read_scan

    start = time.perf_counter()
    out = Path(out)
    storage = out / "ray_results"
    if overwrite:
        shutil.rmtree(storage, ignore_errors=True)
        for name in (WEIGHTS_FILE, CARD_FILE, METRICS_FILE):
            (out / name).unlink(missing_ok=True)
    elif (out / METRICS_FILE).is_file() and (out / CARD_FILE).is_file() and (out / WEIGHTS_FILE).is_file():
        log.info("%s already holds a trained segmenter; pass overwrite to train again", out)
        return json.loads((out / METRICS_FILE).read_text())

    index = index_archive(archive)
    usable = index[(index["status"] == "ok") & index["mask_path"].notna()].reset_index(drop=True)
    if usable.empty:
        raise ValueError(f"{archive}: no scans with masks to train on")
    split = split_patients(usable, cfg.seg.test_fraction, cfg.seg.val_fraction, test_site, cfg.seg.seed)
    by_id = usable.set_index("scan_id", drop=False)
    rows = {part: [by_id.loc[s] for s in ids] for part, ids in split.items()}
    log.info("segmenter split: %s", {k: len(v) for k, v in split.items()})

    net, outcome, (name, kwargs) = fit_prepared(
        _prepared_refs(rows["train"], cfg), _prepared_refs(rows["val"], cfg), cfg, storage
    )
    used = rows["train"] + rows["val"]
    card = make_card(
        name,
        kwargs,
        cfg,
        data_hash=data_hash((r.scan_id, _file_bytes(r.image_path), _file_bytes(r.mask_path)) for r in used),
        git_revision=git_revision(),
        training={"epochs": outcome.epochs, "best_epoch": outcome.best_epoch, "best_val_iou": outcome.best_val_iou,
                  "n_train": len(rows["train"]), "n_val": len(rows["val"]), "test_site": test_site,
                  "weight_average_decay": cfg.seg.ema_decay},
    )
    segmenter = Segmenter(net, card)
    test_pairs = (
        (r.scan_id, read_scan(r.image_path, cfg.limits), read_scan(r.mask_path, cfg.limits, check_voxels=False))
        for r in rows["test"]
    )
    per_scan = evaluate(segmenter, test_pairs, cfg.discs)
    for row in per_scan:
        row["site"] = str(by_id.loc[row["scan_id"], "site"])
    metrics = _metrics(name, outcome, per_scan, split, test_site, cfg, time.perf_counter() - start)
    save_model(out, segmenter.net.state_dict(), {**card, "metrics": {k: metrics[k] for k in ("test_iou", "test_dice")}})
    write_json_atomic(metrics, out / METRICS_FILE)
    log.info("segmenter: test Dice %s IoU %s", metrics["test_dice"], metrics["test_iou"])
    return metrics


def _metrics(name: str, outcome: TrainOutcome, per_scan: list[dict], split, test_site, cfg: Config, seconds: float) -> dict:
    return {
        "network": name,
        "test_site": test_site,
        "n_train": len(split["train"]),
        "n_val": len(split["val"]),
        "n_test": len(split["test"]),
        "test_iou": mean_ci([r["iou"] for r in per_scan], cfg.seg.seed),
        "test_dice": mean_ci([r["dice"] for r in per_scan], cfg.seg.seed),
        "test_dice_discs": mean_ci([r["dice_discs"] for r in per_scan], cfg.seg.seed),
        "per_scan": per_scan,
        "epochs": outcome.epochs,
        "best_epoch": outcome.best_epoch,
        "best_val_iou": outcome.best_val_iou,
        "train_seconds": outcome.seconds,
        "seconds": seconds,
        "history": outcome.history,
        "cpu_count": os.cpu_count(),
    }
