"""Disc-narrowing cross-validation: XGBoost on latent, geometric and both feature sets (paper step 4).

Pure functions do the science (folds, one fold's fit, metrics with patient-bootstrap CIs); ``cross_validate``
fans folds x feature sets x variants out as Ray tasks when Ray is initialised, else runs a plain loop;
``predict/command.py`` (``rayspine cv``) reads and writes the files.

Protocol. Folds are stratified on the label and grouped by patient (a patient's discs, from all their
scans, sit in one fold), unless ``cfg.cv.group_by_patient`` is False: the paper's own leaky protocol.
Every feature set is scored on the same discs. XGBoost needs no scaling, so none is fitted. The
class-weighted variant sets ``scale_pos_weight = negatives / positives`` of each training fold.
F1 (positive class, threshold 0.5) and ROC AUC are computed once on the pooled out-of-fold predictions;
their 95% CIs come from resampling patients with replacement (discs of one patient are not independent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..config import CVConfig
from ..io.gradings import join_narrowing
from ..schema import LABEL_COLUMN, USABLE_DISC_STATUSES, geometric_features, latent_columns_of
from ..stats import grouped_bootstrap_ci

log = logging.getLogger(__name__)

VARIANTS = ("plain", "class-weighted")
# Paper Table 1 (Perrone et al. 2025), 5-fold CV of disc narrowing on SPIDER: (F1, AUC).
PAPER_TABLE1 = {"latent": (0.81, 0.75), "geometric": (0.79, 0.66), "both": (0.81, 0.76)}
CV_COLUMNS = ["feature_set", "variant", "n_discs", "n_patients", "f1", "f1_lo", "f1_hi", "auc", "auc_lo", "auc_hi"]


# --- data -----------------------------------------------------------------------------------------
def labelled_discs(discs: pd.DataFrame, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """Usable discs with a known 0/1 label, the label in ``disc_narrowing``.

    ``labels`` (``patient_id, level, disc_narrowing``, as from ``io.gradings.narrowing_labels``) replaces
    any label column already in ``discs``; without it the table's own column is used.
    """
    table = discs.copy()
    if "status" in table:
        table = table[table["status"].isin(USABLE_DISC_STATUSES)]
    if labels is not None:
        table[LABEL_COLUMN] = join_narrowing(table, labels)
    if LABEL_COLUMN not in table:
        raise ValueError(f"no labels: pass a gradings file or a table with a {LABEL_COLUMN!r} column")
    table = table[table[LABEL_COLUMN].notna()]
    values = set(pd.unique(table[LABEL_COLUMN].astype(int)))
    if not values <= {0, 1}:
        raise ValueError(f"{LABEL_COLUMN} must be 0/1, found {sorted(values)}")
    table[LABEL_COLUMN] = table[LABEL_COLUMN].astype(int)
    latent = latent_columns_of(table.columns)
    if latent:
        # Discs without a latent vector (not encoded) would be scored by one set and not the others.
        table = table[table[latent].notna().all(axis=1)]
    return table.reset_index(drop=True)


def feature_sets(columns) -> dict[str, list[str]]:
    """``latent``, ``geometric`` and ``both`` column lists; sets without columns are omitted."""
    geometric = [c for c in geometric_features() if c in columns]
    latent = latent_columns_of(columns)
    sets = {"latent": latent, "geometric": geometric, "both": latent + geometric}
    if not latent:
        log.warning("the table has no latent columns z0..: only the geometric feature set is scored")
    return {name: cols for name, cols in sets.items() if cols and (name != "both" or (latent and geometric))}


# --- folds and one fold ---------------------------------------------------------------------------
def make_folds(y: np.ndarray, groups: np.ndarray, n_folds: int, grouped: bool, seed: int) -> np.ndarray:
    """Fold id of every row: stratified on ``y``; grouped by ``groups`` (patients) unless ``grouped`` is
    False, the paper's protocol in which a patient's discs may span folds."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        raise ValueError("cross-validation needs both classes in the labels")
    if grouped:
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            raise ValueError(f"{n_groups} patients cannot fill {n_folds} patient-grouped folds")
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(y)), y, groups)
    else:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(y)), y)
    fold = np.full(len(y), -1, dtype=np.int64)
    for k, (_, test) in enumerate(splits):
        fold[test] = k
    return fold


def xgb_params(cv: CVConfig) -> dict:
    """The paper's XGBoost settings; one thread per model since folds already run in parallel."""
    return {
        "max_depth": cv.max_depth,
        "n_estimators": cv.n_estimators,
        "learning_rate": cv.learning_rate,
        "n_jobs": 1,
        "random_state": cv.seed,
        "eval_metric": "logloss",
    }


def fit_predict_fold(
    X: np.ndarray, y: np.ndarray, fold: np.ndarray, k: int, params: dict, weighted: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Train on every fold but ``k``, predict fold ``k``: (row indices of fold k, P(positive))."""
    from xgboost import XGBClassifier

    train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
    y_train = y[train]
    pos = int(y_train.sum())
    if pos == 0 or pos == len(y_train):
        raise ValueError(f"fold {k}: the training folds hold one class only")
    extra = {"scale_pos_weight": (len(y_train) - pos) / pos} if weighted else {}
    model = XGBClassifier(**params, **extra)
    model.fit(X[train], y_train)
    return test, model.predict_proba(X[test])[:, 1]


# --- metrics --------------------------------------------------------------------------------------
def f1_at_half(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, (p >= 0.5).astype(int), pos_label=1, zero_division=0))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def score_predictions(y: np.ndarray, p: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> dict:
    """F1 and AUC of out-of-fold predictions with patient-bootstrap 95% CIs."""
    f1_lo, f1_hi = grouped_bootstrap_ci(y, p, groups, f1_at_half, n_boot, seed)
    auc_lo, auc_hi = grouped_bootstrap_ci(y, p, groups, auc, n_boot, seed)
    return {
        "n_discs": len(y),
        "n_patients": len(np.unique(groups)),
        "f1": f1_at_half(y, p),
        "f1_lo": f1_lo,
        "f1_hi": f1_hi,
        "auc": auc(y, p),
        "auc_lo": auc_lo,
        "auc_hi": auc_hi,
    }


# --- the whole cross-validation -------------------------------------------------------------------
def run_in_loop(fn: Callable, calls: list[tuple]) -> list:
    """``[fn(*args) for args in calls]``: the default way ``cross_validate`` runs its fits."""
    return [fn(*args) for args in calls]


def cross_validate(table: pd.DataFrame, cv: CVConfig, run_all: Callable[[Callable, list[tuple]], list] = run_in_loop) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every feature set x variant on ``table`` (from ``labelled_discs``).

    Returns ``(results, oof)``: one row per feature set and variant (``CV_COLUMNS``), and the
    out-of-fold predictions (``scan_id, patient_id, level, disc_narrowing, feature_set, variant, fold,
    probability``). ``run_all(fn, calls)`` runs the independent fits and scorings: a plain loop by
    default, Ray tasks from ``rayspine cv`` (``runtime.ray_map``).
    """
    sets = feature_sets(table.columns)
    y = table[LABEL_COLUMN].to_numpy(dtype=np.int64)
    groups = table["patient_id"].astype(str).to_numpy()
    fold = make_folds(y, groups, cv.folds, cv.group_by_patient, cv.seed)
    params = xgb_params(cv)
    jobs = [(name, variant, k) for name in sets for variant in VARIANTS for k in range(cv.folds)]
    matrices = {name: table[cols].to_numpy(dtype=np.float32) for name, cols in sets.items()}
    outs = run_all(fit_predict_fold, [(matrices[n], y, fold, k, params, v != "plain") for n, v, k in jobs])

    prob = {(n, v): np.full(len(y), np.nan) for n in sets for v in VARIANTS}
    for (n, v, _), (rows, p) in zip(jobs, outs):
        prob[(n, v)][rows] = p

    combos = list(prob)
    scores = run_all(score_predictions, [(y, prob[c], groups, cv.n_bootstrap, cv.seed) for c in combos])
    results = pd.DataFrame([{"feature_set": n, "variant": v, **s} for (n, v), s in zip(combos, scores)])[CV_COLUMNS]

    ids = [c for c in ("scan_id", "patient_id", "level") if c in table]
    oof = pd.concat(
        [
            table[ids].assign(**{LABEL_COLUMN: y, "feature_set": n, "variant": v, "fold": fold, "probability": prob[(n, v)]})
            for n, v in combos
        ],
        ignore_index=True,
    )
    return results, oof
