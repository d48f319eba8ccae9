"""Reconstruction of people the model never saw: k folds by person, autoencoder beside linear baselines.

``rayspine train-ae CROPS -o OUT --heldout-folds K``: the usable discs of CROPS are split into K folds
by patient (``baselines.subject_folds``); for every bottleneck and fold an autoencoder is trained on
the other folds (``train_autoencoder``, one Ray task each, all at once) and scores the fold's discs, and
the baselines of a shape-model paper are fitted on the same training discs: PCA with as many
components as the bottleneck (the linear statistical shape model), the nearest training disc, the mean
shape. Each disc is scored once per method by a model that never saw its patient.

Writes ``heldout_discs.csv`` (one row per disc and method), ``heldout.csv`` (mean IoU and Dice per
method with a t interval over discs and a bootstrap interval over people; ``heldout.md`` is the same
table to read, with the autoencoder's paired gain over PCA) and ``heldout.png``
(held-out IoU against bottleneck size, autoencoder beside PCA). Each finished autoencoder fold is kept
at once in ``folds/bn<k>_fold<f>.json``; a re-run into the same folder with the same crops and settings
trains only the folds that are missing (adding a bottleneck trains only its folds).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..io.cards import data_hash
from ..io.store import write_json_atomic, write_text_atomic
from ..report import figures
from ..runtime import cluster_capacity, init_ray, ray_map_as_completed
from ..stats import mean_grouped_bootstrap_ci, mean_t_ci, overlap_scores
from .baselines import baseline_predictions, subject_folds
from .sweep import crops_frame, jsonable_config, load_crops, trial_resources
from .augment import for_crop_frame
from .train import train_autoencoder

log = logging.getLogger(__name__)
SUMMARY_COLUMNS = ["method", "bottleneck", "n_discs", "n_patients", "iou", "iou_lo", "iou_hi", "iou_people_lo", "iou_people_hi", "dice",
                   "vs_pca", "vs_pca_lo", "vs_pca_hi", "vs_pca_people_lo", "vs_pca_people_hi", "better_than_pca"]  # fmt: skip


FOLDS_DIR = "folds"  # one finished autoencoder fold per file: bn<k>_fold<f>.json


FOLD_EVAL_EVERY = 5  # a fold's score is its last epoch's; scoring every epoch only slows it (by ~40 %)


def heldout_fold(crops: np.ndarray, train: np.ndarray, test: np.ndarray, bottleneck: int, ae_cfg, threads: int = 1) -> np.ndarray:
    """Per-disc IoU of ``crops[test]`` reconstructed by an autoencoder trained on ``crops[train]`` (eval mode).

    Scored every ``FOLD_EVAL_EVERY``-th epoch and the last: the same weights as scoring every epoch
    (``AEConfig.eval_every``), so the same result, unless a convergence stop falls between two scorings."""
    import torch

    torch.set_num_threads(threads)  # bottlenecks x folds run side by side, each on the cores Ray gave it
    ae_cfg = replace(ae_cfg, eval_every=max(ae_cfg.eval_every, FOLD_EVAL_EVERY))
    return train_autoencoder(crops[train], bottleneck, ae_cfg, heldout=crops[test]).heldout_iou


def summarise(per_disc: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """``SUMMARY_COLUMNS`` per method: intervals over discs (t) and over people (bootstrap); for the
    autoencoder also its paired difference from PCA with as many components, disc by disc (``vs_pca``:
    the question a shape-model reviewer asks, whether the non-linear code beats the linear one)."""
    rows = []
    for (method, k), group in per_disc.groupby(["method", "bottleneck"], sort=False, dropna=False):
        iou, lo, hi = mean_t_ci(group["iou"])
        _, people_lo, people_hi = mean_grouped_bootstrap_ci(group["iou"], group["patient_id"].astype(str), seed=seed)
        row = {"method": method, "bottleneck": k, "n_discs": len(group), "n_patients": group["patient_id"].nunique(),
               "iou": iou, "iou_lo": lo, "iou_hi": hi, "iou_people_lo": people_lo, "iou_people_hi": people_hi,
               "dice": float(group["dice"].mean())}  # fmt: skip
        pca = per_disc[(per_disc["method"] == "pca") & (per_disc["bottleneck"] == k)]
        if method == "autoencoder" and len(pca):
            paired = group.merge(pca, on=["scan_id", "level", "patient_id"], suffixes=("", "_pca"))
            gain = paired["iou"] - paired["iou_pca"]
            row["vs_pca"], row["vs_pca_lo"], row["vs_pca_hi"] = mean_t_ci(gain)
            _, row["vs_pca_people_lo"], row["vs_pca_people_hi"] = mean_grouped_bootstrap_ci(gain, paired["patient_id"].astype(str), seed=seed)
            row["better_than_pca"] = float((gain > 0).mean())
        rows.append(row)
    # Each bottleneck's autoencoder beside its PCA, smallest first; the size-free baselines last.
    rank = {"autoencoder": 0, "pca": 1, "nearest_iou": 2, "nearest_l2": 3, "mean": 4}
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    order = table.assign(_rank=table["method"].map(rank)).sort_values(["bottleneck", "_rank"], na_position="last", kind="stable").index
    return table.loc[order].reset_index(drop=True)


def run_heldout(crop_dirs: list[Path], out: Path, cfg: Config, folds: int = 5) -> pd.DataFrame:
    """Held-out reconstruction by person for ``cfg.ae.bottlenecks``; returns the summary table."""
    out = Path(out)
    (out / FOLDS_DIR).mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, ae=for_crop_frame(cfg.ae, crops_frame(crop_dirs)))  # one frame, or refused
    crops, meta = load_crops(crop_dirs)
    patients = meta["patient_id"].astype(str).to_numpy()
    splits = subject_folds(patients, folds)
    bottlenecks = [int(k) for k in cfg.ae.bottlenecks]
    log.info("held-out: %d discs of %d people, %d folds, bottlenecks %s", len(crops), meta["patient_id"].nunique(), folds, bottlenecks)
    # What a kept fold was computed from: the crops, who is who, the folds and the training settings
    # (not the list of bottlenecks, so that adding one keeps the others).
    # (sorted: a config field moved within AEConfig is not another setting)
    signature = data_hash(crops, list(patients), folds, sorted(jsonable_config(replace(cfg.ae, bottlenecks=())).items()))
    jobs = [(k, f) for k in bottlenecks for f in range(folds)]
    ae_iou = {job: _kept_fold(out, *job, signature) for job in jobs}
    todo = [job for job in jobs if ae_iou[job] is None]
    if todo:
        _train_folds(crops, splits, todo, cfg, out, signature, ae_iou)

    parts = []
    for (k, f), iou in ae_iou.items():
        parts.append(_rows(meta.iloc[splits[f][1]], "autoencoder", k, f, {"iou": iou, "dice": 2 * iou / (1 + iou)}))
    for f, (train, test) in enumerate(splits):
        for name, predicted in baseline_predictions(crops[train], crops[test], pca_components=bottlenecks).items():
            k = int(name[3:]) if name.startswith("pca") else None
            parts.append(_rows(meta.iloc[test], "pca" if k is not None else name, k, f, overlap_scores(crops[test], predicted)))
    per_disc = pd.concat(parts, ignore_index=True)
    summary = summarise(per_disc, cfg.ae.seed)
    write_text_atomic(per_disc.to_csv(index=False), out / "heldout_discs.csv")
    write_text_atomic(summary.to_csv(index=False, float_format="%.4f"), out / "heldout.csv")
    write_text_atomic(heldout_markdown(summary, folds), out / "heldout.md")
    figures.save(figures.heldout_iou(summary), out / "heldout.png")
    for row in summary[summary["method"] == "autoencoder"].itertuples():
        log.info("held-out: bottleneck %d: autoencoder IoU %.3f (%.3f-%.3f over people), PCA-%d %+.3f (%+.3f to %+.3f), better on %.0f %% of discs",
                 row.bottleneck, row.iou, row.iou_people_lo, row.iou_people_hi, row.bottleneck, row.vs_pca,
                 row.vs_pca_people_lo, row.vs_pca_people_hi, 100 * row.better_than_pca)  # fmt: skip
    return summary


def heldout_markdown(summary: pd.DataFrame, folds: int) -> str:
    """The summary as a table a person reads: one row per model, the autoencoder's gain over PCA of its size."""
    names = {"autoencoder": "autoencoder, bottleneck {k}", "pca": "PCA, {k} components", "nearest_iou": "nearest training disc (IoU)",
             "nearest_l2": "nearest training disc (L2)", "mean": "mean shape"}  # fmt: skip
    lines = [
        "# Reconstruction of people the model never saw",
        "",
        f"{folds} folds by person: each disc is reconstructed by models fitted without its person. IoU intervals: "
        "95 % t over discs, and bootstrap over people (a person's discs are not independent). "
        "Gain over PCA: the autoencoder's IoU minus PCA's with as many components, disc by disc.",
        "",
        "| model | discs | people | IoU (95 % CI, discs) | 95 % CI, people | Dice | gain over PCA (95 % CI, people) | discs better than PCA |",
        "|---|---:|---:|---|---|---:|---|---:|",
    ]
    for row in summary.itertuples(index=False):
        name = names.get(row.method, row.method).format(k="" if pd.isna(row.bottleneck) else int(row.bottleneck))
        gain = "" if pd.isna(row.vs_pca) else f"{row.vs_pca:+.3f} ({row.vs_pca_people_lo:+.3f} to {row.vs_pca_people_hi:+.3f})"
        better = "" if pd.isna(row.better_than_pca) else f"{100 * row.better_than_pca:.0f} %"
        lines.append(f"| {name} | {row.n_discs} | {row.n_patients} | {row.iou:.3f} ({row.iou_lo:.3f}-{row.iou_hi:.3f}) "
                     f"| {row.iou_people_lo:.3f}-{row.iou_people_hi:.3f} | {row.dice:.3f} | {gain} | {better} |")  # fmt: skip
    return "\n".join(lines + [""])


def _train_folds(crops: np.ndarray, splits: list, todo: list[tuple[int, int]], cfg: Config, out: Path, signature: str, ae_iou: dict) -> None:
    """Train the autoencoder folds of ``todo`` as Ray tasks, keeping each as it finishes, with progress."""
    init_ray()  # joins the cluster of RAY_ADDRESS, else a local Ray
    capacity = cluster_capacity()
    resources, threads = trial_resources(len(todo), {"CPU": capacity.cpus, "GPU": capacity.gpus}, capacity.node_cpus, cfg.resources.use_gpu)
    if "gpu" not in resources and resources["cpu"] < 1:
        # More folds than cores: whole cores each, the rest queue (twenty torch processes on two cores thrash).
        resources, threads = {"cpu": 1.0}, 1
    log.info("held-out: %d autoencoder folds to train, each %s, %d torch thread(s)", len(todo), resources, threads)
    calls = [(crops, splits[f][0], splits[f][1], k, cfg.ae, threads) for k, f in todo]  # crops sent once
    # How many folds run at once, so that the time left after the first few is not read as serial.
    at_once = max(1, int(capacity.gpus // resources["gpu"]) if "gpu" in resources else int(capacity.cpus // resources["cpu"]))
    started = time.perf_counter()
    for done, (index, iou) in enumerate(ray_map_as_completed(heldout_fold, calls, resources["cpu"], resources.get("gpu", 0)), start=1):
        k, f = todo[index]
        ae_iou[(k, f)] = np.asarray(iou, dtype=float)
        write_json_atomic({"signature": signature, "bottleneck": k, "fold": f, "iou": ae_iou[(k, f)].tolist()}, _fold_file(out, k, f))
        minutes = (time.perf_counter() - started) / 60
        log.info("held-out: bottleneck %d fold %d: mean IoU %.3f (%d of %d, %.1f min, about %.0f min left)",
                 k, f, ae_iou[(k, f)].mean(), done, len(todo), minutes, minutes / done * (len(todo) - done) * min(at_once, done) / at_once)  # fmt: skip


def _fold_file(out: Path, bottleneck: int, fold: int) -> Path:
    return out / FOLDS_DIR / f"bn{bottleneck}_fold{fold}.json"


def _kept_fold(out: Path, bottleneck: int, fold: int, signature: str) -> np.ndarray | None:
    """The per-disc IoUs of an earlier run of this fold with the same crops and settings, else None."""
    path = _fold_file(out, bottleneck, fold)
    if not path.is_file():
        return None
    kept = json.loads(path.read_text())
    return np.asarray(kept["iou"], dtype=float) if kept.get("signature") == signature else None


def _rows(meta: pd.DataFrame, method: str, bottleneck: int | None, fold: int, scores: dict) -> pd.DataFrame:
    rows = meta[["scan_id", "patient_id", "level"]].reset_index(drop=True)
    return rows.assign(method=method, bottleneck=bottleneck, fold=fold, iou=np.asarray(scores["iou"]), dice=np.asarray(scores["dice"]))
