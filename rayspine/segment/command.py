"""``rayspine train-seg``: split an archive by patient (or hold out a site), train, test, ship the model.

Writes ``MODEL/model.safetensors``, ``model.json`` (the card) and ``metrics.json`` (the test scores and
the protocol that produced them). Training runs under Ray Train (``train.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from ..config import Config
from ..io.archive import index_archive
from ..io.cards import CARD_FILE, WEIGHTS_FILE, data_hash, save_model
from ..io.scans import ScanError, read_scan
from ..io.store import write_json_atomic
from ..runtime import init_ray
from ..stats import mean_bootstrap_ci
from .data import prepare_pair, split_patients
from .infer import Segmenter, evaluate, make_card
from .train import TrainOutcome, fit_prepared

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


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


def prepare_files(image_path: str, mask_path: str, cfg: Config):
    """Ray task body: read one scan and its mask and prepare them; ``(problem, item)``."""

    try:
        image = read_scan(image_path, cfg.limits)
        mask = read_scan(mask_path, cfg.limits, check_voxels=False)
        return "", prepare_pair(image, mask, cfg.grid, cfg.seg)
    except (ScanError, ValueError) as err:
        return str(err), None


def prepared_refs(rows, cfg: Config) -> list:
    """Prepare training scans as parallel Ray tasks; refs to the good ones (bad ones are logged, skipped)."""
    import ray

    task = ray.remote(num_cpus=1, num_returns=2)(prepare_files)
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

    init_ray()  # no-op when the CLI (or a cluster job) already connected
    index = index_archive(archive)
    usable = index[(index["status"] == "ok") & index["mask_path"].notna()].reset_index(drop=True)
    if usable.empty:
        raise ValueError(f"{archive}: no scans with masks to train on")
    split = split_patients(usable, cfg.seg.test_fraction, cfg.seg.val_fraction, test_site, cfg.seg.seed)
    by_id = usable.set_index("scan_id", drop=False)
    rows = {part: [by_id.loc[s] for s in ids] for part, ids in split.items()}
    log.info("segmenter split: %s", {k: len(v) for k, v in split.items()})

    net, outcome, (name, kwargs) = fit_prepared(
        prepared_refs(rows["train"], cfg), prepared_refs(rows["val"], cfg), cfg, storage
    )
    used = rows["train"] + rows["val"]
    card = make_card(
        name,
        kwargs,
        cfg,
        data_hash=data_hash(*sorted((r.scan_id, _file_bytes(r.image_path), _file_bytes(r.mask_path)) for r in used)),
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
    save_model(out, segmenter.net.state_dict(), card.with_metrics({k: metrics[k] for k in ("test_iou", "test_dice")}))
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
        "test_iou": mean_bootstrap_ci([r["iou"] for r in per_scan], cfg.seg.seed),
        "test_dice": mean_bootstrap_ci([r["dice"] for r in per_scan], cfg.seg.seed),
        "test_dice_discs": mean_bootstrap_ci([r["dice_discs"] for r in per_scan], cfg.seg.seed),
        "per_scan": per_scan,
        "epochs": outcome.epochs,
        "best_epoch": outcome.best_epoch,
        "best_val_iou": outcome.best_val_iou,
        "train_seconds": outcome.seconds,
        "seconds": seconds,
        "history": outcome.history,
        "train_workers": outcome.workers,  # where Ray Train ran: node and GPU ids per rank
        "cpu_count": os.cpu_count(),
    }
