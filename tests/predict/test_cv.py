"""Cross-validation: known answers for folds, metrics, CIs, the label join and the written outputs."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from rayspine.predict.command import run_cv
from rayspine.predict.cv import CV_COLUMNS, cross_validate, feature_sets, make_folds
from rayspine.predict.cv import labelled_discs as join_labels
from rayspine.stats import grouped_bootstrap_ci as bootstrap_ci
from rayspine.config import Config, CVConfig
from rayspine.io.gradings import narrowing_labels, read_gradings
from rayspine.schema import geometry_columns, LABEL_COLUMN, latent_columns

from tests.conftest import SPIDER_DIR, require

FAST = CVConfig(n_estimators=50, n_bootstrap=100)


def discs_table(n_patients=40, levels=5, latent=4, seed=0, label=None) -> pd.DataFrame:
    """Fabricated discs table: random geometry and latent; ``label(table, rng)`` gives disc_narrowing."""
    rng = np.random.default_rng(seed)
    n = n_patients * levels
    table = pd.DataFrame(
        {
            "scan_id": [f"{p}_t2" for p in range(n_patients) for _ in range(levels)],
            "patient_id": [str(p) for p in range(n_patients) for _ in range(levels)],
            "site": "a",
            "level": [lv for _ in range(n_patients) for lv in range(1, levels + 1)],
            "status": "ok",
        }
    )
    for c in geometry_columns():
        table[c] = rng.normal(size=n)
    for c in latent_columns(latent):
        table[c] = rng.normal(size=n).astype(np.float32)
    table[LABEL_COLUMN] = label(table, rng) if label else rng.integers(0, 2, size=n)
    return table


def narrow_if_low(table, rng):
    # Disc narrowing decided by height alone (plus a little label noise-free margin).
    return (table["height_mm"] < 0).astype(int)


def test_label_from_one_feature_gives_high_auc():
    results, oof = cross_validate(discs_table(label=narrow_if_low), FAST)
    by = results.set_index(["feature_set", "variant"])
    for name in ("geometric", "both"):
        for variant in ("plain", "class-weighted"):
            assert by.loc[(name, variant), "auc"] > 0.9
            assert by.loc[(name, variant), "f1"] > 0.8
            assert by.loc[(name, variant), "auc_lo"] <= by.loc[(name, variant), "auc"] <= by.loc[(name, variant), "auc_hi"]
    # The latent columns are noise: no better than chance.
    assert by.loc[("latent", "plain"), "auc_lo"] < 0.5 < by.loc[("latent", "plain"), "auc_hi"]
    assert oof["probability"].notna().all() and set(oof["fold"]) == set(range(5))


def test_shuffled_labels_give_ci_containing_half():
    table = discs_table(label=narrow_if_low, seed=1)
    table[LABEL_COLUMN] = np.random.default_rng(7).permutation(table[LABEL_COLUMN].to_numpy())
    results, _ = cross_validate(table, FAST)
    assert len(results) == 6
    for row in results.itertuples():
        assert row.auc_lo < 0.5 < row.auc_hi, row
        assert row.auc_hi - row.auc_lo > 0.05  # a real interval, not a point


def test_grouped_folds_keep_patients_together_leaky_folds_do_not():
    table = discs_table(n_patients=30, levels=6, seed=2, label=narrow_if_low)
    y, groups = table[LABEL_COLUMN].to_numpy(), table["patient_id"].to_numpy()
    grouped = make_folds(y, groups, 5, grouped=True, seed=0)
    leaky = make_folds(y, groups, 5, grouped=False, seed=0)
    folds_per_patient = pd.Series(grouped).groupby(groups).nunique()
    assert (folds_per_patient == 1).all()
    assert (pd.Series(leaky).groupby(groups).nunique() > 1).sum() > 10
    for fold in (grouped, leaky):
        assert set(fold) == set(range(5))
        # Stratified: every fold's positive rate near the overall one.
        rates = pd.Series(y).groupby(fold).mean()
        assert (rates - y.mean()).abs().max() < 0.15


def test_fold_errors_are_clear():
    with pytest.raises(ValueError, match="patients"):
        make_folds(np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "b"]), 5, grouped=True, seed=0)
    with pytest.raises(ValueError, match="both classes"):
        make_folds(np.zeros(20), np.arange(20), 5, grouped=True, seed=0)


def test_class_weighted_variant_raises_positive_probabilities():
    # 10% positives that the features only partly explain: weighting by neg/pos (about 9) must
    # push the out-of-fold probabilities of the positive class up.
    def rare(table, rng):
        return ((table["height_mm"] + rng.normal(scale=1.0, size=len(table))) < -1.8).astype(int)

    table = discs_table(n_patients=60, label=rare, seed=3)
    assert 0.03 < table[LABEL_COLUMN].mean() < 0.2
    results, oof = cross_validate(table, FAST)
    mean_p = oof.groupby(["feature_set", "variant"])["probability"].mean()
    for name in ("latent", "geometric", "both"):
        assert mean_p[(name, "class-weighted")] > 1.5 * mean_p[(name, "plain")]


def test_bootstrap_resamples_whole_patients():
    # Ten identical discs per patient: resampling patients must give exactly the CI of one disc per
    # patient (same seed); resampling discs would give a far narrower one.
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=50)
    p = np.where(rng.random(50) < 0.7, y, 1 - y).astype(float)
    accuracy = lambda a, b: float(np.mean(a == (b >= 0.5)))  # noqa: E731
    one = bootstrap_ci(y, p, np.arange(50), accuracy, 300, seed=0)
    ten = bootstrap_ci(np.repeat(y, 10), np.repeat(p, 10), np.repeat(np.arange(50), 10), accuracy, 300, seed=0)
    discs = bootstrap_ci(np.repeat(y, 10), np.repeat(p, 10), np.arange(500), accuracy, 300, seed=0)
    assert ten == pytest.approx(one)
    assert (discs[1] - discs[0]) < 0.6 * (ten[1] - ten[0])
    assert one[0] < accuracy(y, p) < one[1]


def test_join_labels_filters_status_and_joins_by_patient_and_level():
    table = discs_table(n_patients=3, levels=3).drop(columns=LABEL_COLUMN)
    second_scan = table[table["patient_id"] == "0"].assign(scan_id="0_t1")  # same patient, other series
    table = pd.concat([table, second_scan], ignore_index=True)
    table.loc[(table["patient_id"] == "1") & (table["level"] == 2), "status"] = "too_large"
    table.loc[(table["patient_id"] == "2") & (table["level"] == 3), "z0"] = np.nan
    labels = pd.DataFrame(
        {"patient_id": ["0", "0", "0", "1", "1", "2", "2"], "level": [1, 2, 3, 1, 2, 1, 3], LABEL_COLUMN: [1, 0, 1, 0, 1, 1, 0]}
    )
    joined = join_labels(table, labels)
    got = {(r.scan_id, r.level): getattr(r, LABEL_COLUMN) for r in joined.itertuples()}
    assert got == {
        ("0_t2", 1): 1, ("0_t2", 2): 0, ("0_t2", 3): 1,
        ("0_t1", 1): 1, ("0_t1", 2): 0, ("0_t1", 3): 1,
        ("1_t2", 1): 0,  # (1, 2) too large, (1, 3) ungraded
        ("2_t2", 1): 1,  # (2, 3) has no latent vector
    }  # fmt: skip
    with pytest.raises(ValueError, match="0/1"):
        join_labels(table, labels.assign(**{LABEL_COLUMN: 3}))
    with pytest.raises(ValueError, match="no labels"):
        join_labels(table)


def test_feature_sets_skip_latent_when_absent():
    table = discs_table(n_patients=2)
    six = ["height_mm", "ap_width_mm", "lateral_width_mm", "sagittal_angle_deg", "transverse_angle_deg", "coronal_angle_deg"]
    assert feature_sets(table.columns) == {"latent": latent_columns(4), "geometric": six, "both": latent_columns(4) + six}
    assert feature_sets(table.drop(columns=latent_columns(4)).columns) == {"geometric": six}


def test_real_spider_gradings_join_by_patient_and_level():
    path = require(SPIDER_DIR / "radiological_gradings.csv")
    with open(path, newline="") as f:
        raw = {(r["Patient"], int(r["IVD label"])): int(r["Disc narrowing"]) for r in csv.DictReader(f)}
    pairs = [("1", 1), ("1", 2), ("1", 3), ("10", 4), ("100", 2), ("218", 1)]
    pairs = [p for p in pairs if p in raw]
    assert len(pairs) >= 4
    discs = pd.DataFrame(
        {"scan_id": [f"{p}_t2" for p, _ in pairs], "patient_id": [p for p, _ in pairs],
         "level": [lv for _, lv in pairs], "status": "ok", "height_mm": 1.0}
    )  # fmt: skip
    discs.loc[len(discs)] = {"scan_id": "1_t2", "patient_id": "1", "level": 0, "status": "ok", "height_mm": 1.0}
    joined = join_labels(discs, narrowing_labels(read_gradings(path)))
    assert {(r.patient_id, r.level): getattr(r, LABEL_COLUMN) for r in joined.itertuples()} == {p: raw[p] for p in pairs}


def test_run_cv_on_ray_writes_table_markdown_roc_and_oof(tmp_path, ray_local):
    features = tmp_path / "discs.parquet"
    table = discs_table(n_patients=25, label=narrow_if_low, seed=5)
    table[LABEL_COLUMN] = table[LABEL_COLUMN].astype("int8")
    labels_csv = tmp_path / "gradings.csv"
    # The gradings file decides: FEATURES' own column is noise and must be replaced.
    gradings = table[["patient_id", "level", LABEL_COLUMN]].rename(
        columns={"patient_id": "Patient", "level": "IVD label", LABEL_COLUMN: "Disc narrowing"}
    )
    for c in ("Modic", "UP endplate", "LOW endplate", "Spondylolisthesis", "Disc herniation", "Disc bulging", "Pfirrman grade"):
        gradings[c] = 0
    gradings.to_csv(labels_csv, index=False)
    table[LABEL_COLUMN] = np.random.default_rng(0).integers(0, 2, len(table)).astype("int8")
    table.to_parquet(features)

    cfg = Config().replace(cv={"n_estimators": 50, "n_bootstrap": 100})
    results = run_cv(features, tmp_path / "cv", cfg, labels=labels_csv)
    written = pd.read_csv(tmp_path / "cv" / "cv.csv")
    assert list(written.columns) == CV_COLUMNS and len(written) == 6
    informative = written["feature_set"] != "latent"  # the latent columns are noise here
    assert (written.loc[informative, "auc"] > 0.9).all() and (written.loc[~informative, "auc"] < 0.75).all()
    assert (written["n_patients"] == 25).all()
    assert np.allclose(written["auc"], results["auc"], atol=1e-4)
    md = (tmp_path / "cv" / "cv.md").read_text()
    assert "| latent | plain |" in md and "0.75" in md and "0.66" in md and "patient-grouped" in md
    assert (tmp_path / "cv" / "roc.png").stat().st_size > 10_000
    oof = pd.read_parquet(tmp_path / "cv" / "oof.parquet")
    assert len(oof) == 6 * len(table)
    assert (oof.groupby("patient_id")["fold"].nunique() == 1).all()
    # The leaky protocol (the paper's) lets a patient's discs span folds.
    leaky = cfg.replace(cv={"group_by_patient": False})
    run_cv(features, tmp_path / "leaky", leaky, labels=labels_csv)
    oof = pd.read_parquet(tmp_path / "leaky" / "oof.parquet")
    assert (oof.groupby("patient_id")["fold"].nunique() > 1).any()
    assert "leaky" in (tmp_path / "leaky" / "cv.md").read_text()


def test_table_without_latent_columns_scores_the_geometric_set_only():
    table = discs_table(n_patients=20, label=narrow_if_low, seed=6).drop(columns=latent_columns(4))
    results, oof = cross_validate(table, CVConfig(n_estimators=20, n_bootstrap=50))
    assert results[["feature_set", "variant"]].values.tolist() == [["geometric", "plain"], ["geometric", "class-weighted"]]
    assert (results["auc"] > 0.9).all() and len(oof) == 2 * len(table)
