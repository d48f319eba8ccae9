"""``rayspine train-seg``: cross-validate a small archive by patient (or hold out a site or patients), train, test, ship.

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

import numpy as np

from ..config import Config
from ..io.archive import index_archive
from ..io.cards import CARD_FILE, WEIGHTS_FILE, data_hash, read_card, save_model
from ..io.scans import ScanError, read_scan
from ..io.store import write_json_atomic
from ..runtime import init_ray
from ..stats import mean_bootstrap_ci
from .data import patient_folds, prepare_pair, split_patients
from .infer import Segmenter, check_precision, evaluate, make_card
from .networks import network_spec
from .train import fit_prepared, initial_weights

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


def prepared_by_id(rows, cfg: Config) -> dict:
    """Prepare each training scan once (parallel Ray tasks); ``scan_id -> ref`` of the good ones."""
    import ray

    task = ray.remote(num_cpus=1, num_returns=2)(prepare_files)
    pending = [(row.scan_id, *task.remote(row.image_path, row.mask_path, cfg)) for row in rows]
    kept = {}
    for scan_id, problem, item in pending:
        message = ray.get(problem)
        if message:
            log.warning("training scan %s skipped: %s", scan_id, message)
        else:
            kept[scan_id] = item
    return kept


def choose_protocol(usable, cfg: Config, test_site: str | None) -> str:
    """"cross-validation" for a small labelled set (under ``cv_below_patients`` patients, three or
    more, no test site), else "hold-out" (a held-out site, or a random share of the patients)."""
    n = usable["patient_id"].astype(str).nunique()
    small = cfg.seg.cv_below_patients > 0 and 3 <= n < cfg.seg.cv_below_patients
    return "cross-validation" if test_site is None and small and cfg.seg.cv_folds >= 2 else "hold-out"


def train_segmenter(archive: Path, out: Path, cfg: Config, test_site: str | None = None, overwrite: bool = False) -> dict:
    """Train on an archive with masks (Ray Train) and score the model on people it never saw.

    Small labelled sets (``choose_protocol``) are cross-validated by patient: each fold trains with an
    inner validation patient for early stopping (none when it has fewer than ``cv_min_val_patients``
    patients: it trains for ``max_epochs``) and is tested on its held-out patients, so every labelled
    scan gets an out-of-fold score; the model shipped is then trained on every patient for the
    median of the folds' best epochs: one network, as cheap to run as any, and on unseen real people
    better than an ensemble of the fold networks (Dice 0.804 vs 0.750, better on each of 3 people;
    ``bench/bench_real_t2.py --ensemble-vs-final``, bench/segment.md). Otherwise one split: the
    held-out ``test_site`` or ``test_fraction`` of the patients. Writes ``out/model.safetensors``,
    ``out/model.json`` and ``out/metrics.json`` (both saying which protocol produced each figure); Ray
    Train's runs live in ``out/ray_results`` so an interrupted call resumes. A finished model folder is
    left as it is (its metrics are returned) unless ``overwrite``.
    """
    start = time.perf_counter()
    check_precision(cfg.seg.train_precision, "seg.train_precision")
    check_precision(cfg.seg.inference_precision)  # the test scans are scored after training: fail first
    out = Path(out)
    storage = out / "ray_results"
    if overwrite:
        shutil.rmtree(storage, ignore_errors=True)
        for name in (WEIGHTS_FILE, CARD_FILE, METRICS_FILE):
            (out / name).unlink(missing_ok=True)
    elif (out / METRICS_FILE).is_file() and (out / CARD_FILE).is_file() and (out / WEIGHTS_FILE).is_file():
        log.info("%s already holds a trained segmenter; pass overwrite to train again", out)
        return json.loads((out / METRICS_FILE).read_text())

    if cfg.seg.init_from:  # a starting model that does not fit fails now, not after the data are prepared
        initial_weights(cfg, *network_spec(cfg.seg.network, cfg.seg))
    init_ray()  # no-op when the CLI (or a cluster job) already connected
    index = index_archive(archive)
    usable = index[(index["status"] == "ok") & index["mask_path"].notna()].reset_index(drop=True)
    if usable.empty:
        raise ValueError(f"{archive}: no scans with masks to train on")
    protocol = choose_protocol(usable, cfg, test_site)
    by_id = usable.set_index("scan_id", drop=False)
    if protocol == "cross-validation":
        splits = patient_folds(usable, cfg.seg.cv_folds, cfg.seg.val_fraction, cfg.seg.seed, cfg.seg.cv_min_val_patients)
    else:
        splits = [split_patients(usable, cfg.seg.test_fraction, cfg.seg.val_fraction, test_site, cfg.seg.seed)]
    # Each training scan is prepared once, whichever folds it trains or validates in (test scans are read as they are).
    learnt = sorted({s for split in splits for s in split["train"] + split["val"]})
    refs = prepared_by_id([by_id.loc[s] for s in learnt], cfg)

    folds, per_scan, fitted = [], [], None
    for k, split in enumerate(splits):
        log.info("segmenter %s split %d: %s", protocol, k, {part: len(ids) for part, ids in split.items()})
        where = storage if protocol == "hold-out" else storage / f"fold{k}"
        fitted = fit_prepared([refs[s] for s in split["train"] if s in refs], [refs[s] for s in split["val"] if s in refs], cfg, where)
        net, outcome, (name, kwargs) = fitted
        tester = Segmenter(net, make_card(name, kwargs, cfg), precision=cfg.seg.inference_precision)
        scores = _test(tester, [by_id.loc[s] for s in split["test"]], cfg)
        for row in scores:
            row["fold"] = k
        per_scan += scores
        folds.append({"fold": k, **{f"n_{part}": len(ids) for part, ids in split.items()}, "test_scans": split["test"],
                      "epochs": outcome.epochs, "best_epoch": outcome.best_epoch, "best_val_iou": outcome.best_val_iou,
                      "train_seconds": outcome.seconds, "test_dice": mean_bootstrap_ci([r["dice"] for r in scores], cfg.seg.seed)["mean"],
                      "history": outcome.history})

    if protocol == "cross-validation":
        # The shipped model sees every labelled patient; with no one left to stop it early it trains
        # for the epochs the folds found best (their median), and the last averaged weights are kept.
        final_epochs = max(1, int(np.median([f["best_epoch"] for f in folds])))
        final_cfg = cfg.replace(seg={"max_epochs": final_epochs})
        every = [refs[s] for s in usable["scan_id"] if s in refs]
        net, final, (name, kwargs) = fit_prepared(every, [], final_cfg, storage / "final")
        used = list(usable["scan_id"])
        training = {"protocol": protocol, "folds": len(splits), "final_fit_epochs": final_epochs, "n_train": len(used), "n_val": 0}
        shipped = {"epochs": final.epochs, "n_train": len(used), "train_seconds": final.seconds, "chosen_from_folds": [f["best_epoch"] for f in folds],
                   "workers": final.workers}
    else:
        net, outcome, (name, kwargs) = fitted
        used = splits[0]["train"] + splits[0]["val"]
        training = {"protocol": protocol, "epochs": outcome.epochs, "best_epoch": outcome.best_epoch, "best_val_iou": outcome.best_val_iou,
                    "n_train": len(splits[0]["train"]), "n_val": len(splits[0]["val"]), "test_site": test_site}
        shipped = {"epochs": outcome.epochs, "n_train": len(splits[0]["train"]), "n_val": len(splits[0]["val"]), "workers": outcome.workers}
    rows = [by_id.loc[s] for s in used]
    card = make_card(
        name,
        kwargs,
        cfg,
        data_hash=data_hash(*sorted((r.scan_id, _file_bytes(r.image_path), _file_bytes(r.mask_path)) for r in rows)),
        git_revision=git_revision(),
        training={**training, "weight_average_decay": cfg.seg.ema_decay, **_initialised_from(cfg)},
    )
    segmenter = Segmenter(net, card)
    for row in per_scan:
        row["site"] = str(by_id.loc[row["scan_id"], "site"])
    metrics = _metrics(name, protocol, folds, shipped, per_scan, splits, test_site, cfg, time.perf_counter() - start)
    metrics["test_inference_precision"] = "bfloat16" if tester.bfloat16 else "float32"  # what scored the test scans
    card_metrics = {k: metrics[k] for k in ("test_iou", "test_dice", "protocol", "test_protocol")}
    save_model(out, segmenter.net.state_dict(), card.with_metrics(card_metrics))
    write_json_atomic(metrics, out / METRICS_FILE)
    log.info("segmenter (%s): test Dice %s IoU %s", protocol, metrics["test_dice"], metrics["test_iou"])
    return metrics


def _initialised_from(cfg: Config) -> dict:
    """For the card: the segmenter that training started from, if any (where, and what trained it)."""
    if not cfg.seg.init_from:
        return {}
    start = read_card(cfg.seg.init_from)
    return {"initialised_from": {"folder": str(Path(cfg.seg.init_from).resolve()), "data_hash": start.data_hash,
                                 "config_digest": start.config_digest}}


def _test(segmenter: Segmenter, rows, cfg: Config) -> list[dict]:
    pairs = ((r.scan_id, read_scan(r.image_path, cfg.limits), read_scan(r.mask_path, cfg.limits, check_voxels=False)) for r in rows)
    return evaluate(segmenter, pairs, cfg.discs)


def _metrics(name: str, protocol: str, folds: list[dict], shipped: dict, per_scan: list[dict], splits, test_site, cfg: Config, seconds: float) -> dict:
    if protocol == "cross-validation":
        stopping = ("early stopping on an inner validation patient" if all(f["n_val"] for f in folds) else
                    f"folds of fewer than {cfg.seg.cv_min_val_patients} training patients kept none for early stopping and trained {cfg.seg.max_epochs} epochs")
        said = (f"{len(folds)}-fold cross-validation by patient: every scan scored once, by the fold that never saw its "
                f"patient ({stopping}); the shipped model is a final fit on all "
                f"patients for {shipped['epochs']} epochs and has no test figure of its own")
    elif test_site is not None:
        said = f"hold-out site {test_site!r}: the shipped model, tested on every patient of that site"
    else:
        said = f"hold-out: the shipped model, tested on {cfg.seg.test_fraction:.0%} of the patients, drawn at random"
    first = folds[0]
    return {
        "network": name,
        "protocol": protocol,
        "test_protocol": said,  # which model and which people each test_* figure comes from
        "test_site": test_site,
        "n_train": shipped["n_train"],
        "n_val": shipped.get("n_val", 0),
        "n_test": len(per_scan),
        "test_iou": mean_bootstrap_ci([r["iou"] for r in per_scan], cfg.seg.seed),
        "test_dice": mean_bootstrap_ci([r["dice"] for r in per_scan], cfg.seg.seed),
        "test_dice_discs": mean_bootstrap_ci([r["dice_discs"] for r in per_scan], cfg.seg.seed),
        # the levels `measure` gives the network's masks, against the manual numbering (scans that have one)
        "test_levels": {k: sum(r.get(k, 0) for r in per_scan) for k in ("discs_labelled", "discs_found", "levels_correct")},
        "per_scan": per_scan,
        "folds": [{k: v for k, v in f.items() if k != "history"} for f in folds] if protocol == "cross-validation" else [],
        "shipped": shipped,
        "epochs": shipped["epochs"],
        "best_epoch": first["best_epoch"] if protocol == "hold-out" else None,
        "best_val_iou": first["best_val_iou"] if protocol == "hold-out" else None,
        "train_seconds": sum(f["train_seconds"] for f in folds) + (shipped.get("train_seconds", 0.0) if protocol == "cross-validation" else 0.0),
        "seconds": seconds,
        "history": first["history"] if protocol == "hold-out" else [],
        "train_workers": shipped.get("workers", []),  # where Ray Train ran: node and GPU ids per rank
        "cpu_count": os.cpu_count(),
    }
