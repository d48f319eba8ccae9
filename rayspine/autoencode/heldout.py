"""Reconstruction of people the model never saw: k folds by person, autoencoder beside linear baselines.

``rayspine train-ae CROPS -o OUT --heldout-folds K``: the usable discs of CROPS are split into K folds
by patient (``baselines.subject_folds``); for every bottleneck and fold an autoencoder is trained on
the other folds (``train_autoencoder``, one Ray task each, all at once) and scores the fold's discs, and
the baselines of a shape-model paper are fitted on the same training discs: PCA with as many
components as the bottleneck (the linear statistical shape model), the nearest training disc, the mean
shape. Each disc is scored once per method by a model that never saw its patient.

Writes ``heldout_discs.csv`` (one row per disc and method), ``heldout.csv`` (mean IoU and Dice per
method with a t interval over discs and a bootstrap interval over people) and ``heldout.png``
(held-out IoU against bottleneck size, autoencoder beside PCA).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..io.store import write_text_atomic
from ..report import figures
from ..runtime import ray_map
from ..stats import mean_grouped_bootstrap_ci, mean_t_ci, overlap_scores
from .baselines import baseline_predictions, subject_folds
from .sweep import load_crops
from .train import train_autoencoder

log = logging.getLogger(__name__)
SUMMARY_COLUMNS = ["method", "bottleneck", "n_discs", "n_patients", "iou", "iou_lo", "iou_hi", "iou_people_lo", "iou_people_hi", "dice"]


def heldout_fold(crops: np.ndarray, train: np.ndarray, test: np.ndarray, bottleneck: int, ae_cfg) -> np.ndarray:
    """Per-disc IoU of ``crops[test]`` reconstructed by an autoencoder trained on ``crops[train]`` (eval mode)."""
    import torch

    torch.set_num_threads(1)  # one task per core: bottlenecks x folds run side by side
    return train_autoencoder(crops[train], bottleneck, ae_cfg, heldout=crops[test]).heldout_iou


def summarise(per_disc: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """``SUMMARY_COLUMNS`` per method: intervals over discs (t) and over people (bootstrap)."""
    rows = []
    for (method, k), group in per_disc.groupby(["method", "bottleneck"], sort=False, dropna=False):
        iou, lo, hi = mean_t_ci(group["iou"])
        _, people_lo, people_hi = mean_grouped_bootstrap_ci(group["iou"], group["patient_id"].astype(str), seed=seed)
        rows.append({"method": method, "bottleneck": k, "n_discs": len(group), "n_patients": group["patient_id"].nunique(),
                     "iou": iou, "iou_lo": lo, "iou_hi": hi, "iou_people_lo": people_lo, "iou_people_hi": people_hi,
                     "dice": float(group["dice"].mean())})  # fmt: skip
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def run_heldout(crop_dirs: list[Path], out: Path, cfg: Config, folds: int = 5) -> pd.DataFrame:
    """Held-out reconstruction by person for ``cfg.ae.bottlenecks``; returns the summary table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    crops, meta = load_crops(crop_dirs)
    splits = subject_folds(meta["patient_id"].astype(str).to_numpy(), folds)
    bottlenecks = [int(k) for k in cfg.ae.bottlenecks]
    log.info("held-out: %d discs of %d people, %d folds, bottlenecks %s", len(crops), meta["patient_id"].nunique(), folds, bottlenecks)
    jobs = [(k, f) for k in bottlenecks for f in range(folds)]
    ae_iou = ray_map(heldout_fold, [(crops, splits[f][0], splits[f][1], k, cfg.ae) for k, f in jobs])  # crops sent once

    parts = []
    for (k, f), iou in zip(jobs, ae_iou):
        parts.append(_rows(meta.iloc[splits[f][1]], "autoencoder", k, f, {"iou": iou, "dice": 2 * iou / (1 + iou)}))
    for f, (train, test) in enumerate(splits):
        for name, predicted in baseline_predictions(crops[train], crops[test], pca_components=bottlenecks).items():
            k = int(name[3:]) if name.startswith("pca") else None
            parts.append(_rows(meta.iloc[test], "pca" if k is not None else name, k, f, overlap_scores(crops[test], predicted)))
    per_disc = pd.concat(parts, ignore_index=True)
    summary = summarise(per_disc, cfg.ae.seed)
    write_text_atomic(per_disc.to_csv(index=False), out / "heldout_discs.csv")
    write_text_atomic(summary.to_csv(index=False, float_format="%.4f"), out / "heldout.csv")
    figures.save(figures.heldout_iou(summary), out / "heldout.png")
    return summary


def _rows(meta: pd.DataFrame, method: str, bottleneck: int | None, fold: int, scores: dict) -> pd.DataFrame:
    rows = meta[["scan_id", "patient_id", "level"]].reset_index(drop=True)
    return rows.assign(method=method, bottleneck=bottleneck, fold=fold, iou=np.asarray(scores["iou"]), dice=np.asarray(scores["dice"]))
