"""Segmentation: networks, splits, metrics, the inference mapping, a tiny Ray Train run and its resume.

The real-anatomy training (two real T2 volumes, one for validation) is behind ``-m slow``.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pandas as pd
import pytest
import torch

from rayspine.config import Config
from rayspine.io.cards import ModelFileError, save_model
from rayspine.segment.networks import build_segmentation_net, check_patch_size, network_spec, resolve_network
from rayspine.segment.data import split_patients, train_transforms
from rayspine.stats import iou_dice
from rayspine.segment.infer import Segmenter, evaluate, make_card
from rayspine.stats import mean_bootstrap_ci as mean_ci

try:  # tests/ as a package or as a plain folder on sys.path
    from tests.test_preprocess import oblique_scan
except ImportError:
    from test_preprocess import oblique_scan

torch.set_num_threads(1)

TINY = {"patch_size": (32, 32, 32), "feature_size": 4, "samples_per_scan": 2, "max_epochs": 2}


# --- networks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["unet", "segresnet", "swinunetr"])
def test_each_network_maps_a_patch_to_one_logit_channel(name):
    cfg = Config().seg
    net = build_segmentation_net(name, cfg).eval()
    with torch.inference_mode():
        out = net(torch.randn(2, 1, 32, 64, 32))
    assert out.shape == (2, 1, 32, 64, 32)
    assert torch.isfinite(out).all()


def test_auto_network_follows_the_device_and_patch_sizes_are_checked():
    assert resolve_network("auto", cuda=True) == "swinunetr"
    assert resolve_network("auto", cuda=False) == "unet"
    with pytest.raises(ValueError, match="unknown"):
        resolve_network("vnet")
    # SwinUNETR insists on multiples of 32 per axis and on a feature size divisible by 12.
    check_patch_size("swinunetr", (64, 96, 96))
    with pytest.raises(ValueError, match="multiple of 32"):
        check_patch_size("swinunetr", (48, 96, 96))
    assert network_spec("swinunetr", Config().seg)[1]["feature_size"] == 24
    assert network_spec("swinunetr", Config().replace(seg={"feature_size": 40}).seg)[1]["feature_size"] == 48
    assert network_spec("unet", Config().seg)[1]["channels"] == [8, 16, 32, 64, 128]


# --- splits and metrics -----------------------------------------------------------------------------
def _index(n_patients=12, scans_per_patient=2, sites=3):
    rows = [
        {"scan_id": f"{p}_{s}", "patient_id": str(p), "site": f"site{(p - 1) % sites + 1}"}
        for p in range(1, n_patients + 1)
        for s in range(scans_per_patient)
    ]
    return pd.DataFrame(rows)


def test_a_held_out_site_is_the_whole_test_set_and_patients_never_straddle():
    index = _index()
    split = split_patients(index, test_fraction=0.2, val_fraction=0.25, test_site="site2", seed=0)
    site_of = dict(zip(index["scan_id"], index["site"]))
    assert {site_of[s] for s in split["test"]} == {"site2"}
    assert len(split["test"]) == 8  # 4 patients of site2, 2 scans each
    assert "site2" not in {site_of[s] for s in split["train"] + split["val"]}
    assert len(split["val"]) == 4  # a quarter of the 8 remaining patients, both scans each
    patient = lambda ids: {s.split("_")[0] for s in ids}  # noqa: E731
    assert not (patient(split["train"]) & patient(split["val"]) or patient(split["train"]) & patient(split["test"]))
    assert sorted(sum(split.values(), [])) == sorted(index["scan_id"])
    with pytest.raises(ValueError, match="not in the archive"):
        split_patients(index, 0.2, 0.2, test_site="site9")


def test_random_split_takes_the_test_fraction_of_patients():
    split = split_patients(_index(n_patients=10, scans_per_patient=1), 0.2, 0.25, None, seed=3)
    assert [len(split[k]) for k in ("train", "val", "test")] == [6, 2, 2]
    assert split == split_patients(_index(n_patients=10, scans_per_patient=1), 0.2, 0.25, None, seed=3)


def test_iou_and_dice_known_answers():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    a[0:4] = True  # 400 voxels
    b[2:6] = True  # 400 voxels, 200 shared
    iou, dice = iou_dice(a, b)
    assert iou == pytest.approx(200 / 600) and dice == pytest.approx(0.5)
    assert iou_dice(a, a) == (1.0, 1.0)
    assert iou_dice(np.zeros_like(a), np.zeros_like(a)) == (1.0, 1.0)


def test_weight_average_ramps_its_decay_then_holds_it_and_copies_buffers():
    from rayspine.segment.train import update_average, weight_average

    net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    average = weight_average(net, decay=0.2)
    expected = None
    for step, value in enumerate([0.0, 1.0, 1.0, 3.0, 3.0, 3.0]):
        net[0].weight.data.fill_(value)
        net[1].running_mean.fill_(10.0 + step)
        update_average(average, net)
        d = min(0.2, (1 + step) / (10 + step))  # the first update copies: step 0 has nothing to average
        expected = value if expected is None else d * expected + (1 - d) * value
        assert float(average.module[0].weight.detach()) == pytest.approx(expected)
        assert float(average.module[1].running_mean) == 10.0 + step  # statistics are the network's own
    assert expected == pytest.approx(2.9837090909)  # decay 0.2 from the third update: 80 % of the way to 3 each step


def test_boundary_term_charges_false_voxels_by_their_distance_from_the_outline():
    from rayspine.config import SegConfig
    from rayspine.segment.train import segmentation_loss

    label = torch.zeros(1, 1, 32, 32, 32)
    label[..., 14:18, 8:24, 8:24] = 1
    logits = label * 20 - 10  # confident and right everywhere
    near, far = logits.clone(), logits.clone()
    near[..., 18, 8:24, 8:24] = 10  # a layer of 256 false voxels on the outline
    far[..., 26, 8:24, 8:24] = 10  # the same 256, nine voxels away
    paper = segmentation_loss(SegConfig())
    assert float(paper(near, label)) == pytest.approx(float(paper(far, label)), abs=1e-6)  # BCE + Dice only count them
    boundary = segmentation_loss(SegConfig(boundary_weight=1.0))
    assert float(boundary(far, label)) > float(boundary(near, label)) + 0.05
    assert float(boundary(near, label)) < float(paper(near, label))  # confident interior voxels are rewarded


def test_mean_ci_brackets_the_mean_and_narrows_with_more_scans():
    rng = np.random.default_rng(0)
    few, many = rng.normal(0.9, 0.03, 8), rng.normal(0.9, 0.03, 200)
    a, b = mean_ci(few), mean_ci(many)
    assert a["ci95"][0] < a["mean"] < a["ci95"][1]
    assert b["ci95"][1] - b["ci95"][0] < a["ci95"][1] - a["ci95"][0]
    assert b["ci95"][0] < 0.9 < b["ci95"][1]
    assert mean_ci([])["mean"] is None


@pytest.mark.parametrize("soft_labels", [False, True])
def test_scale_and_tilt_augmentation_moves_image_and_label_together(soft_labels):
    # An image that is its own label: after the random zoom and tilt, the label must still be binary
    # (0/1 labels) or shares in 0..1 (soft labels), and lie where the image is bright, or the network
    # would learn from misaligned pairs.
    from monai.utils import set_determinism

    set_determinism(seed=0)
    label = np.zeros((1, 48, 64, 64), np.float32 if soft_labels else np.uint8)
    label[0, 14:34, :, 26:38] = 1  # a slab, like a disc, running out of the patch front and back
    item = {"image": label.astype(np.float32), "label": label}
    tilted_or_zoomed = 0
    transform = train_transforms((32, 48, 48), samples_per_scan=8, scale=0.3, rotate_deg=20, soft_labels=soft_labels)
    for patch in transform(item):
        image, mask = np.asarray(patch["image"][0]), np.asarray(patch["label"][0])
        if soft_labels:
            assert mask.min() >= 0.0 and mask.max() <= 1.0 + 1e-6
        else:
            assert set(np.unique(mask)) <= {0, 1}
        # intensity jitter is +-10 %, noise sd 0.05: bright means disc, dark means background
        assert iou_dice(image > 0.5, mask > 0.5)[1] > 0.95
        # crops and left-right flips keep the slab 12 slices thick; a zoom or a sagittal tilt does not
        tilted_or_zoomed += np.count_nonzero((mask > 0.5).any(axis=(0, 1))) != 12
    assert tilted_or_zoomed
    set_determinism(seed=None)


def test_zoomed_and_tilted_patches_inside_a_scan_show_no_padding():
    # The image is a ramp along the anterior-posterior axis. Any zoom and tilt of real content keeps
    # it a linear function of the patch's coordinates; padding (zeros, smeared or reflected edges)
    # would fold or flatten it. Patches on the disc, in the middle of a large scan, reach no edge.
    from monai.utils import set_determinism

    set_determinism(seed=1)
    shape = (80, 200, 200)
    ramp = np.broadcast_to(np.arange(shape[1], dtype=np.float32)[None, :, None], shape)
    label = np.zeros((1, *shape), np.uint8)
    label[0, 30:50, 90:110, 95:105] = 1
    item = {"image": ramp[None].copy(), "label": label}
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in (32, 48, 48)], indexing="ij"), -1).reshape(-1, 3)
    design = np.column_stack([coords, np.ones(len(coords))])
    on_disc = 0
    for patch in train_transforms((32, 48, 48), samples_per_scan=8, scale=0.3, rotate_deg=20)(item):
        if not np.asarray(patch["label"]).any():
            continue  # a background patch may sit at the scan's edge, where padding is right
        on_disc += 1
        values = np.asarray(patch["image"][0]).reshape(-1)
        fit, *_ = np.linalg.lstsq(design, values, rcond=None)
        residual = values - design @ fit
        assert np.sqrt(np.mean(residual**2)) < 0.2  # noise sd 0.05; a fold at an edge leaves several units
    assert on_disc >= 4
    set_determinism(seed=None)


@pytest.mark.parametrize("scale, rotate_deg", [(0.0, 0.0), (0.3, 20.0)])
def test_patches_reach_the_discs_at_both_ends_of_the_scan(scale, rotate_deg):
    # Discs 3 voxels from each end of a long scan. The crop that feeds the zoom and tilt is larger
    # than the patch; kept inside the scan it would never centre near an end, and the first and last
    # disc (L5/S1 on most fields of view) would never be learnt. The image holds the z coordinate.
    from monai.utils import set_determinism

    set_determinism(seed=2)
    shape = (40, 64, 200)
    z = np.broadcast_to(np.arange(shape[2], dtype=np.float32), shape)
    label = np.zeros((1, *shape), np.uint8)
    label[0, 10:30, 20:40, 2:5] = 1
    label[0, 10:30, 20:40, -5:-2] = 1
    item = {"image": z[None].copy(), "label": label}
    seen = set()
    for patch in train_transforms((32, 48, 48), samples_per_scan=16, scale=scale, rotate_deg=rotate_deg)(item):
        on_disc = np.asarray(patch["image"][0])[np.asarray(patch["label"][0]) > 0.5]
        seen |= {"low"} if np.any(on_disc < 10) else set()
        seen |= {"high"} if np.any(on_disc > shape[2] - 10) else set()
    assert seen == {"low", "high"}
    set_determinism(seed=None)


# --- inference mapping ------------------------------------------------------------------------------
class _Oracle(torch.nn.Module):
    """Logits that threshold the normalised image: a 'network' whose right answer is known."""

    def forward(self, x):
        return 10.0 * (x - 1.0)


def test_predict_returns_the_disc_on_the_scans_own_oblique_grid():
    cfg = Config()
    truth = oblique_scan()
    image = truth.with_voxels((truth.voxels > 0) * 300.0 + 20.0)  # bright disc, dark surroundings
    segmenter = Segmenter(_Oracle(), make_card("unet", {}, cfg), device="cpu")
    pred = segmenter.predict(image)
    assert pred.same_grid(image) and pred.voxels.dtype == np.uint8
    assert set(np.unique(pred.voxels)) <= {0, 1}
    # The way back is exact up to the resampling of a 3 mm-slice scan through the 1.4x1.2x1.5 mm grid.
    assert iou_dice(pred.voxels, truth.voxels > 0)[1] > 0.95


class _ConvOracle(torch.nn.Module):
    """The oracle's threshold as a 1x1x1 convolution (autocast runs convolutions in bfloat16), noting the
    dtype its output had."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(10.0)
            self.conv.bias.fill_(-10.0)
        self.dtypes = set()

    def forward(self, x):
        y = self.conv(x)
        self.dtypes.add(y.dtype)
        return y


def test_bfloat16_inference_runs_the_network_in_bfloat16_and_keeps_the_mask():
    cfg = Config()
    truth = oblique_scan()
    image = truth.with_voxels((truth.voxels > 0) * 300.0 + 20.0)
    masks = {}
    for precision, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        net = _ConvOracle()
        masks[precision] = Segmenter(net, make_card("unet", {}, cfg), device="cpu", precision=precision).predict(image).voxels
        assert net.dtypes == {dtype}
    assert iou_dice(masks["bfloat16"], truth.voxels > 0)[1] > 0.95
    assert iou_dice(masks["bfloat16"], masks["float32"])[1] > 0.99


def test_auto_precision_is_bfloat16_only_where_the_hardware_has_it(monkeypatch):
    from rayspine.segment.infer import runs_in_bfloat16

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    assert not runs_in_bfloat16("auto", "cpu")
    assert runs_in_bfloat16("auto", "cuda")  # the device's type decides; no GPU needed to ask
    assert runs_in_bfloat16("bfloat16", "cpu") and not runs_in_bfloat16("float32", "cuda")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert runs_in_bfloat16("auto", "cpu")
    assert runs_in_bfloat16("gpu", "cuda") and not runs_in_bfloat16("gpu", "cpu")  # training's default
    with pytest.raises(ValueError, match="one of auto, gpu, float32, bfloat16"):
        runs_in_bfloat16("float16", "cpu")


def test_load_refuses_foreign_cards_mismatched_and_pickled_weights(tmp_path):
    cfg = Config()
    name, kwargs = network_spec("unet", Config().replace(seg={"feature_size": 4}).seg)
    net = build_segmentation_net("unet", Config().replace(seg={"feature_size": 4}).seg)
    save_model(tmp_path / "ok", net.state_dict(), make_card(name, kwargs, cfg))
    assert isinstance(Segmenter.load(tmp_path / "ok", device="cpu").net, torch.nn.Module)

    save_model(tmp_path / "ae", net.state_dict(), dataclasses.replace(make_card(name, kwargs, cfg), kind="autoencoder"))
    with pytest.raises(ModelFileError, match="not a segmenter"):
        Segmenter.load(tmp_path / "ae")

    wider = {**kwargs, "channels": [8, 16, 32, 64, 128]}
    save_model(tmp_path / "wide", net.state_dict(), make_card(name, wider, cfg))
    with pytest.raises(ModelFileError, match="do not fit"):
        Segmenter.load(tmp_path / "wide")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "model.json").write_text(json.dumps(make_card(name, kwargs, cfg).to_json()))
    torch.save({"weights": net.state_dict(), "payload": _Oracle()}, pickled / "model.pt")  # a pickled object
    with pytest.raises(ModelFileError, match="refused"):
        Segmenter.load(pickled)


# --- a tiny end-to-end run on Ray Train -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory):
    from rayspine.synth import synthesize_archive

    root = tmp_path_factory.mktemp("seg_archive")
    synthesize_archive(root, patients=4, sites=2, seed=1, size="small")
    return root


def test_train_segmenter_writes_a_model_that_predicts_on_the_scan_grid(tiny_archive, tmp_path, ray_local):
    from rayspine.io.archive import index_archive
    from rayspine.io.cards import read_card
    from rayspine.io.scans import read_scan
    from rayspine.segment.command import prepared_refs, train_segmenter
    from rayspine.segment.train import fit_prepared

    cfg = Config().replace(seg=TINY)
    out = tmp_path / "seg"
    metrics = train_segmenter(tiny_archive, out, cfg, test_site="site2")
    for name in ("model.safetensors", "model.json", "metrics.json"):
        assert (out / name).is_file()
    assert json.loads((out / "metrics.json").read_text())["n_test"] == metrics["n_test"] == 2
    assert (metrics["n_train"], metrics["n_val"]) == (1, 1)
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2 and metrics["network"] == "unet"
    assert {r["site"] for r in metrics["per_scan"]} == {"site2"}
    assert all(0.0 <= r["dice"] <= 1.0 for r in metrics["per_scan"])
    low, high = metrics["test_dice"]["ci95"]
    assert low <= metrics["test_dice"]["mean"] <= high
    card = read_card(out, "segmenter")
    assert card.kind == "segmenter" and card.config_digest == cfg.digest()
    assert len(card.data_hash) == 16 and card.architecture == "unet"
    assert card["spacing_mm"] == list(cfg.grid.spacing_mm) and card["patch_size"] == [32, 32, 32]

    index = index_archive(tiny_archive)
    image = read_scan(index.loc[index["site"] == "site2", "image_path"].iloc[0])
    pred = Segmenter.load(out, device="cpu").predict(image)
    assert pred.same_grid(image) and pred.voxels.dtype == np.uint8 and set(np.unique(pred.voxels)) <= {0, 1}

    # A finished folder is not retrained (same metrics back, at once) unless asked.
    start = time.perf_counter()
    assert train_segmenter(tiny_archive, out, cfg, test_site="site2") == metrics
    assert time.perf_counter() - start < 5

    # Ray Train resumes the interrupted run from its storage: epochs 1-2 are restored, only 3 is trained.
    rows = [r for r in index.itertuples() if r.site == "site1"]
    refs = prepared_refs(rows[:1], cfg), prepared_refs(rows[1:], cfg)
    _, outcome, _ = fit_prepared(*refs, cfg.replace(seg={"max_epochs": 3}), out / "ray_results")
    assert outcome.epochs == 3 and len(outcome.history) == 3
    assert outcome.history[:2] == metrics["history"]

    # Fine-tuning starts from another segmenter's weights: with a learning rate of 0 they come out as they went in.
    from rayspine.io.cards import load_weights

    tuned = tmp_path / "tuned"
    start_cfg = cfg.replace(seg={"init_from": str(out), "learning_rate": 0.0, "max_epochs": 1})
    train_segmenter(tiny_archive, tuned, start_cfg, test_site="site2")
    start, after = load_weights(out), load_weights(tuned)
    for name, _ in Segmenter.load(out, device="cpu").net.named_parameters():
        assert torch.allclose(start[name], after[name], atol=1e-6), name
    assert read_card(tuned, "segmenter")["training"]["initialised_from"]["data_hash"] == card.data_hash
    with pytest.raises(ModelFileError, match="network"):  # a wider network cannot start from these weights
        train_segmenter(tiny_archive, tmp_path / "wider", start_cfg.replace(seg={"feature_size": 8}), test_site="site2")



def test_training_runs_in_the_precision_asked_for(tiny_archive, tmp_path, ray_local):
    from rayspine.io.archive import index_archive
    from rayspine.segment.command import prepared_refs
    from rayspine.segment.train import fit_prepared

    cfg = Config().replace(seg={**TINY, "max_epochs": 1})
    rows = [r for r in index_archive(tiny_archive).itertuples() if r.site == "site1"]
    refs = prepared_refs(rows[:1], cfg)
    losses = {}
    for precision in ("float32", "bfloat16"):
        _, outcome, _ = fit_prepared(refs, [], cfg.replace(seg={"train_precision": precision}), tmp_path / precision)
        assert {w["precision"] for w in outcome.workers} == {precision}
        losses[precision] = outcome.history[0]["loss"]
    # The same seed, patches and start: only the network's arithmetic differs, a little.
    assert losses["float32"] != losses["bfloat16"] and abs(losses["float32"] - losses["bfloat16"]) < 0.05 * losses["float32"]

def test_folds_test_every_patient_once_and_never_train_on_it():
    from rayspine.segment.data import patient_folds

    index = _index(n_patients=7, scans_per_patient=2)
    folds = patient_folds(index, folds=3, val_fraction=0.2, seed=0)
    patient = lambda ids: {s.split("_")[0] for s in ids}  # noqa: E731
    tested = [patient(f["test"]) for f in folds]
    assert sorted(len(t) for t in tested) == [2, 2, 3] and set().union(*tested) == set(map(str, range(1, 8)))
    for f, t in zip(folds, tested):
        assert not (t & patient(f["train"]) or t & patient(f["val"]) or patient(f["train"]) & patient(f["val"]))
        assert len(patient(f["val"])) == 1 and len(f["train"] + f["val"] + f["test"]) == 14
    assert len(patient_folds(index, folds=5, val_fraction=0.2)) == 5
    assert len(patient_folds(_index(n_patients=3), folds=5, val_fraction=0.2)) == 3  # one fold per patient at most
    # too few patients for one of them to validate: each fold trains on both of its others
    for f in patient_folds(_index(n_patients=3), folds=3, val_fraction=0.2, min_val_patients=4):
        assert (len(patient(f["train"])), len(f["val"]), len(patient(f["test"]))) == (2, 0, 1)
    assert all(len(patient(f["val"])) == 1 for f in patient_folds(_index(n_patients=5), folds=5, val_fraction=0.2, min_val_patients=4))
    with pytest.raises(ValueError, match="3 patients"):
        patient_folds(_index(n_patients=2), folds=2, val_fraction=0.2)


def test_small_archives_are_cross_validated_and_large_ones_held_out():
    from rayspine.segment.command import choose_protocol

    cfg = Config()
    assert choose_protocol(_index(n_patients=3), cfg, None) == "cross-validation"  # the three real T2 volumes
    assert choose_protocol(_index(n_patients=19), cfg, None) == "cross-validation"
    assert choose_protocol(_index(n_patients=20), cfg, None) == "hold-out"
    assert choose_protocol(_index(n_patients=12), cfg, "site1") == "hold-out"  # --test-site keeps the paper's protocol
    assert choose_protocol(_index(n_patients=12), cfg.replace(seg={"cv_below_patients": 0}), None) == "hold-out"


def test_train_segmenter_cross_validates_a_small_archive_and_ships_a_final_fit(tiny_archive, tmp_path, ray_local):
    from rayspine.io.cards import read_card
    from rayspine.segment.command import train_segmenter

    cfg = Config().replace(seg={**TINY, "cv_folds": 2, "inference_precision": "bfloat16"})
    out = tmp_path / "cv"
    metrics = train_segmenter(tiny_archive, out, cfg)
    assert metrics["protocol"] == "cross-validation" and "2-fold" in metrics["test_protocol"]
    assert metrics["test_inference_precision"] == "bfloat16"  # as asked, whatever this CPU has
    assert {w["precision"] for w in metrics["shipped"]["workers"]} == {"float32"}  # training: bfloat16 on a GPU only
    # every labelled scan is tested exactly once, out of fold
    assert sorted(r["scan_id"] for r in metrics["per_scan"]) == [f"{p}_t1" for p in range(1, 5)]
    assert len(metrics["folds"]) == 2 and {r["fold"] for r in metrics["per_scan"]} == {0, 1}
    for fold in metrics["folds"]:  # two patients left per fold: too few to keep one for early stopping
        assert (fold["n_train"], fold["n_val"], fold["n_test"]) == (2, 0, 2) and fold["epochs"] == fold["best_epoch"] == 2
    assert metrics["n_test"] == 4 and metrics["n_train"] == 4  # the shipped model saw every patient
    chosen = int(np.median([f["best_epoch"] for f in metrics["folds"]]))
    assert metrics["shipped"]["epochs"] == chosen and metrics["shipped"]["chosen_from_folds"] == [f["best_epoch"] for f in metrics["folds"]]
    card = read_card(out, "segmenter")
    assert card.metrics["protocol"] == "cross-validation" and card.metrics["test_dice"] == metrics["test_dice"]
    assert card["training"]["final_fit_epochs"] == chosen and card["training"]["n_train"] == 4
    assert (out / "ray_results" / "final").is_dir() and (out / "ray_results" / "fold1").is_dir()


def test_train_seg_cli_shows_each_epoch_once(tiny_archive, tmp_path):
    """What a user sees: one line per epoch. Ray Train logs what a training function prints and, with the
    worker's stdout wrapped, prints it too; printed epoch lines reached the driver twice."""
    import subprocess
    import sys

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"seg": {**TINY, "cv_below_patients": 0}}))
    out = subprocess.run([sys.executable, "-m", "rayspine.cli", "train-seg", str(tiny_archive), "-o", str(tmp_path / "model"), "--config", str(config)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in (out.stdout + out.stderr).splitlines() if " loss " in line and "val_iou" in line]
    assert [line.split("epoch ", 1)[1].split(" ", 1)[0] for line in lines] == ["1/2", "2/2"]


# --- real anatomy (slow) ----------------------------------------------------------------------------
@pytest.mark.slow
def test_real_t2_volumes_train_to_dice_085_within_15_minutes(tmp_path, ray_local):
    from tests.conftest import load_real_subject
    from rayspine.segment.train import fit_segmenter

    train = [load_real_subject(11), load_real_subject(20)]
    val_image, val_mask = load_real_subject(25)
    cfg = Config().replace(seg={"max_minutes": 12.0, "max_epochs": 300, "samples_per_scan": 8, "patience": 40})
    start = time.perf_counter()
    net, outcome, (name, kwargs) = fit_segmenter(train, [(val_image, val_mask)], cfg, tmp_path / "ray_results")
    segmenter = Segmenter(net, make_card(name, kwargs, cfg), device="cpu")
    (scores,) = evaluate(segmenter, [("subject_25", val_image, val_mask)], cfg.discs)
    seconds = time.perf_counter() - start
    print(f"real T2: validation Dice {scores['dice']:.3f} (network), {scores['dice_discs']:.3f} (disc instances) "
          f"after {outcome.epochs} epochs, {seconds:.0f} s ({name})")
    assert seconds < 15 * 60
    assert scores["dice_discs"] >= 0.85  # the mask the pipeline keeps and measures


def test_level_agreement_counts_found_discs_and_wrong_levels():
    from rayspine.segment.infer import level_agreement

    truth = np.zeros((6, 6, 12), np.uint16)
    truth[..., 0:2], truth[..., 4:7], truth[..., 8:10] = 201, 202, 203
    predicted = np.zeros_like(truth)
    predicted[..., 0:2] = 201  # right
    predicted[..., 4:7] = 203  # found, one level too high (a false piece below it took level 1, say)
    predicted[..., 6] = 202  # a third of the disc, the minority, does not decide
    predicted[..., 11] = 204  # outside every labelled disc: not counted
    got = level_agreement(predicted, truth)
    assert got == {"discs_labelled": 3, "discs_found": 2, "levels_correct": 1, "levels_wrong": "2->3"}
    assert level_agreement(truth, truth)["levels_correct"] == 3
