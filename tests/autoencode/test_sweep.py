"""The bottleneck sweep: crops read from measure-style folders, trials run at the same time, cards written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from rayspine.autoencode.infer import load_autoencoder, with_crop_frame_of
from rayspine.stats import iou_per_item as iou_per_disc
from rayspine.config import AEConfig, Config
from rayspine.io.cards import ModelCard
from rayspine.io.store import write_crops_zarr
from rayspine.autoencode.sweep import crops_frame, load_crops, run_sweep, split_heldout, trial_resources
from rayspine.autoencode.augment import for_crop_frame
from tests.autoencode.test_train import disc_phantoms


def _crop_folder(path, crops_by_scan: dict[str, np.ndarray], statuses: dict | None = None):
    """A `measure`-style output folder: crops.zarr/<scan_id> and discs.parquet."""
    rows = []
    for scan_id, crops in crops_by_scan.items():
        levels = list(range(1, len(crops) + 1))
        write_crops_zarr(path / "crops.zarr", scan_id, crops, levels)
        for i, level in enumerate(levels):
            status = (statuses or {}).get((scan_id, level), "ok")
            rows.append({"scan_id": scan_id, "patient_id": f"p-{scan_id}", "level": level, "status": status, "crop_index": i})
    pd.DataFrame(rows).to_parquet(path / "discs.parquet")
    return path


def test_load_crops_keeps_usable_discs_and_split_is_by_patient(tmp_path):
    crops = disc_phantoms(6, seed=3)
    folder = _crop_folder(tmp_path / "a", {"s1": crops[:3], "s2": crops[3:]}, {("s1", 2): "possibly_merged", ("s2", 1): "too_large"})
    loaded, meta = load_crops([folder])
    assert len(loaded) == 4 and loaded.dtype == np.uint8
    assert list(zip(meta["scan_id"], meta["level"])) == [("s1", 1), ("s1", 3), ("s2", 2), ("s2", 3)]
    np.testing.assert_array_equal(loaded[1], crops[2])
    held = split_heldout(meta, 0.3, seed=0)
    assert held.sum() == 2 and meta["patient_id"][held].nunique() == 1  # one whole patient
    assert not split_heldout(meta, 0.0, seed=0).any()
    assert not split_heldout(meta, 1.0, seed=0).all()  # never every disc


def _mark_frame(folder, frame: str) -> None:
    """The settings marker `measure` writes, with the crops' frame."""
    (folder / "measure.json").write_text(json.dumps({"command": "measure", "settings": {"discs": {"crop_frame": frame}}}))


def test_one_crop_frame_per_model_and_runs_make_crops_in_the_models_frame(tmp_path):
    crops = disc_phantoms(4, seed=5)
    a = _crop_folder(tmp_path / "a", {"s1": crops[:2]})
    b = _crop_folder(tmp_path / "b", {"s2": crops[2:]})
    assert crops_frame([a, b]) == "scan"  # outputs without the setting were all made in the scan's frame
    _mark_frame(b, "disc_plane")
    with pytest.raises(ValueError, match="different frames"):
        crops_frame([a, b])
    card = ModelCard(kind="autoencoder", architecture="disc_ae", kwargs={}, spacing_mm=(1.4, 1.2, 1.5), fields={"crop_frame": "disc_plane"})
    assert with_crop_frame_of(Config(), card).discs.crop_frame == "disc_plane"
    old_card = ModelCard(kind="autoencoder", architecture="disc_ae", kwargs={}, spacing_mm=(1.4, 1.2, 1.5))
    assert with_crop_frame_of(Config().replace(discs={"crop_frame": "disc_plane"}), old_card).discs.crop_frame == "scan"
    # Tilt-aligned crops are turned within the disc's plane only; three limits are taken as given.
    assert for_crop_frame(AEConfig(augment_rotate_deg=7.0), "disc_plane").augment_rotate_deg == (0.0, 0.0, 7.0)
    assert for_crop_frame(AEConfig(augment_rotate_deg=7.0), "scan").augment_rotate_deg == 7.0
    assert for_crop_frame(AEConfig(augment_rotate_deg=(2.0, 0.0, 7.0)), "disc_plane").augment_rotate_deg == (2.0, 0.0, 7.0)


def test_trial_resources_fit_all_trials_at_once():
    assert trial_resources(4, {"CPU": 2.0}) == ({"cpu": 0.5}, 1)  # a 2-core laptop: 4 trials together
    assert trial_resources(2, {"CPU": 16.0}) == ({"cpu": 8.0}, 8)
    assert trial_resources(4, {"CPU": 32.0, "GPU": 4.0}) == ({"cpu": 1.0, "gpu": 1.0}, 1)
    assert trial_resources(4, {"CPU": 16.0, "GPU": 1.0})[0]["gpu"] == 0.25


def test_sweep_runs_trials_concurrently_and_writes_models(tmp_path, ray_local):
    torch.set_num_threads(1)
    crops = disc_phantoms(10, seed=2)
    folder = _crop_folder(tmp_path / "measured", {f"s{i}": crops[2 * i : 2 * i + 2] for i in range(5)})
    _mark_frame(folder, "disc_plane")
    cfg = Config().replace(ae={"bottlenecks": (2, 3), "max_epochs": 3, "target_iou": 1.01, "heldout_fraction": 0.2})
    out = tmp_path / "sweep"
    table = run_sweep([folder], out, cfg)

    saved = pd.read_csv(out / "sweep.csv")
    assert list(saved["bottleneck"]) == [2, 3] and (saved["epochs"] == 3).all() and not saved["converged"].any()
    assert (saved["n_train"] == 8).all() and (saved["n_heldout"] == 2).all()
    assert saved["heldout_iou"].between(0, 1).all() and (saved["train_iou_ci_low"] <= saved["train_iou"]).all()
    # Both trials were running at the same time: their [start, end] intervals overlap.
    start, end = pd.to_datetime(saved["started"]), pd.to_datetime(saved["ended"])
    assert start.max() < end.min(), saved[["bottleneck", "started", "ended"]]
    # Nothing converged (target above 1): the default is the best IoU, and says so.
    default = json.loads((out / "default.json").read_text())
    best = int(saved.sort_values("train_iou", ascending=False)["bottleneck"].iloc[0])
    assert default["bottleneck"] == best and default["converged"] is False
    assert table["default"].sum() == 1

    for k in (2, 3):
        card = json.loads((out / f"bn{k}" / "model.json").read_text())
        assert card["kind"] == "autoencoder" and card["bottleneck"] == k and card["config_digest"] == cfg.digest()
        assert card["spacing_mm"] == [1.4, 1.2, 1.5] and card["metrics"]["epochs"] == 3
        assert card["crop_frame"] == "disc_plane"  # the frame its crops were made in, from measure.json
        assert card["ae_config"]["augment_rotate_deg"] == [0.0, 0.0, 10.0]  # turned within the discs' plane only
        history = pd.read_csv(out / f"bn{k}" / "history.csv")  # the epoch curve (masks at 0.5) ending at the card's
        assert history["epoch"].tolist() == [1, 2, 3]  # figure, which is at the threshold fitted after training
        last, final = history["train_iou"].iloc[-1], card["metrics"]["train_iou"]
        assert final == pytest.approx(last) if card["metrics"]["decision_threshold"] == 0.5 else final > last
    assert saved["decision_threshold"].between(0.3, 0.7).all()
    assert (out / "sweep.png").stat().st_size > 10_000  # the curves of both sizes
    # The sweep folder loads its default model; encode/decode round-trips to the card's IoU.
    used = pd.read_csv(out / "discs_used.csv")
    train = crops[[2 * int(s[1:]) + lv - 1 for s, lv, h in zip(used["scan_id"], used["level"], used["heldout"]) if not h]]
    model = load_autoencoder(out)
    assert model.bottleneck == best
    recon = model.decode(model.encode(train)) > 0.5
    row = saved[saved["bottleneck"] == best].iloc[0]
    assert iou_per_disc(train, recon).mean() == pytest.approx(row["train_iou"], abs=1e-9)

    # A re-run finds every size finished and trains nothing (same table back, models untouched).
    stamp = (out / "bn2" / "model.safetensors").stat().st_mtime_ns
    again = run_sweep([folder], out, cfg)
    assert (out / "bn2" / "model.safetensors").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again.reset_index(drop=True), table.reset_index(drop=True))
