"""Held-out reconstruction by person: every disc scored once per method by a model that never saw its patient."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from rayspine.autoencode.heldout import run_heldout, summarise
from rayspine.config import Config
from tests.autoencode.test_sweep import _crop_folder
from tests.autoencode.test_train import disc_phantoms


def test_heldout_scores_each_disc_once_per_method_beside_pca(tmp_path, ray_local):
    torch.set_num_threads(1)
    crops = disc_phantoms(12, seed=7)
    folder = _crop_folder(tmp_path / "measured", {f"s{i}": crops[2 * i : 2 * i + 2] for i in range(6)})  # 6 patients
    cfg = Config().replace(ae={"bottlenecks": (4,), "max_epochs": 2, "channels": (4, 8, 8, 8), "target_iou": 1.01})
    summary = run_heldout([folder], tmp_path / "heldout", cfg, folds=3)

    per_disc = pd.read_csv(tmp_path / "heldout" / "heldout_discs.csv")
    for (method, k), rows in per_disc.groupby(["method", per_disc["bottleneck"].fillna(-1)]):
        assert len(rows) == 12 and not rows.duplicated(["scan_id", "level"]).any(), (method, k)  # every disc once
        assert rows["fold"].nunique() == 3
    # A person's discs are all in one fold, so their model never saw them.
    assert (per_disc.groupby(["method", "bottleneck", "patient_id"], dropna=False)["fold"].nunique() == 1).all()
    assert set(summary["method"]) == {"autoencoder", "pca", "nearest_iou", "nearest_l2", "mean"}
    assert list(summary.loc[summary.method == "autoencoder", "bottleneck"]) == [4]
    ok = summary.dropna(subset=["iou_lo"])
    assert ((ok["iou_lo"] <= ok["iou"]) & (ok["iou"] <= ok["iou_hi"])).all() and summary["iou"].between(0, 1).all()
    # Held-out PCA-4 must beat the mean shape, which is the same disc for everyone.
    at = summary.set_index(["method", "bottleneck"])
    assert at.loc[("pca", 4), "iou"] > summary.loc[summary.method == "mean", "iou"].iloc[0]
    assert np.isclose(per_disc.loc[per_disc.method == "autoencoder", "dice"], 2 * per_disc.loc[per_disc.method == "autoencoder", "iou"] / (1 + per_disc.loc[per_disc.method == "autoencoder", "iou"])).all()
    assert (tmp_path / "heldout" / "heldout.png").stat().st_size > 1000
    table = (tmp_path / "heldout" / "heldout.md").read_text()
    assert "| autoencoder, bottleneck 4 | 12 | 6 |" in table and "| PCA, 4 components | 12 | 6 |" in table


def test_a_rerun_keeps_finished_folds_and_trains_only_what_changed(tmp_path, ray_local):
    torch.set_num_threads(1)
    crops = disc_phantoms(8, seed=3)
    folder = _crop_folder(tmp_path / "measured", {f"s{i}": crops[2 * i : 2 * i + 2] for i in range(4)})
    cfg = Config().replace(ae={"bottlenecks": (4,), "max_epochs": 1, "channels": (4, 8, 8, 8), "target_iou": 1.01})
    out = tmp_path / "heldout"
    first = run_heldout([folder], out, cfg, folds=2)
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "folds").iterdir()}
    assert sorted(kept) == ["bn4_fold0.json", "bn4_fold1.json"]

    # The same settings plus one more bottleneck: bottleneck 4's folds are reused as they are, 3's trained.
    second = run_heldout([folder], out, cfg.replace(ae={"bottlenecks": (4, 3)}), folds=2)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "folds").glob("bn4_*")} == kept
    assert sorted(p.name for p in (out / "folds").glob("bn3_*")) == ["bn3_fold0.json", "bn3_fold1.json"]
    same = [t[(t.method == "autoencoder") & (t.bottleneck == 4)].reset_index(drop=True) for t in (first, second)]
    pd.testing.assert_frame_equal(*same)

    # Other training settings: the kept folds do not apply and are trained again.
    run_heldout([folder], out, cfg.replace(ae={"max_epochs": 2}), folds=2)
    assert all((out / "folds" / name).stat().st_mtime_ns != mtime for name, mtime in kept.items())


def test_summary_pairs_the_autoencoder_with_pca_of_its_size_disc_by_disc():
    discs = pd.DataFrame({"scan_id": ["a", "a", "b", "b"], "patient_id": ["p", "p", "q", "q"], "level": [1, 2, 1, 2]})
    pca4 = np.array([0.70, 0.60, 0.80, 0.75])
    gain = np.array([0.10, 0.10, 0.10, -0.10])  # better on 3 of 4 discs, +0.05 on average
    tables = [discs.assign(method="pca", bottleneck=4, iou=pca4), discs.assign(method="pca", bottleneck=8, iou=pca4 + 0.2),
              discs.assign(method="autoencoder", bottleneck=4, iou=pca4 + gain), discs.assign(method="mean", bottleneck=None, iou=0.5)]  # fmt: skip
    per_disc = pd.concat(tables, ignore_index=True).assign(dice=lambda t: 2 * t.iou / (1 + t.iou))
    summary = summarise(per_disc).set_index(["method", "bottleneck"])
    ae = summary.loc[("autoencoder", 4)]
    assert np.isclose(ae["vs_pca"], 0.05) and np.isclose(ae["better_than_pca"], 0.75)  # against PCA-4, not PCA-8
    assert ae["vs_pca_lo"] < 0.05 < ae["vs_pca_hi"] and ae["vs_pca_people_lo"] <= 0.05 <= ae["vs_pca_people_hi"]
    assert summary.drop(index=("autoencoder", 4))["vs_pca"].isna().all()
