"""What inference-side choices and the network's grid cost on real T2, out of fold (issue 15, part 3).

Takes a cross-validated ``train-seg`` model folder (the one ``bench_real_t2.py`` makes) and its archive,
and, for every fold, scores the fold's network on the scan it never saw:

- test-time flips (none, left-right, all three axes; probabilities averaged),
- the probability threshold (0.3 to 0.6),
- the levels ``measure`` gives the predicted mask, against the manual numbering;
- where its errors lie: volumes drawn and missed, how far false positives sit from the manual outline,
  Dice per disc;

then the ceiling the network's grid puts on Dice: the manual mask taken to 1.4 x 1.2 x 1.5 mm and back
(linear, > 0.5, as inference does), as nearest-neighbour 0/1 labels and as partial-volume shares.

    python bench/bench_seg_inference.py [--model /tmp/real-t2/model] [--archive /tmp/real-t2/archive]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rayspine.config import Config  # noqa: E402
from rayspine.io.cards import SEGMENTER, network  # noqa: E402
from rayspine.io.scans import read_scan  # noqa: E402
from rayspine.measure.scan import measure_mask  # noqa: E402
from rayspine.preprocess import to_scan_grid  # noqa: E402
from rayspine.segment.data import disc_foreground, prepare_pair  # noqa: E402
from rayspine.segment.infer import Segmenter, level_agreement, make_card, predict_logits, prepare_input  # noqa: E402
from rayspine.stats import iou_dice  # noqa: E402

THRESHOLDS = (0.3, 0.4, 0.5, 0.6)


def fold_network(model: Path, fold: int, architecture: dict, cfg: Config) -> Segmenter:
    """The fold's kept weights (best = last averaged, without a validation patient) from its Ray Train run."""
    from safetensors.torch import load_file

    checkpoints = sorted((model / "ray_results" / f"fold{fold}" / "segmenter").glob("checkpoint_2*"))
    net = network(SEGMENTER, architecture["name"]).build(architecture["kwargs"])
    net.load_state_dict(load_file(str(checkpoints[-1] / "best.safetensors")))
    return Segmenter(net, make_card(architecture["name"], architecture["kwargs"], cfg))


def flipped_probabilities(seg: Segmenter, voxels: np.ndarray) -> dict[str, np.ndarray]:
    def probability(x):
        logits = predict_logits(seg.net, np.ascontiguousarray(x), seg.card["patch_size"], seg.card["sw_overlap"], seg.device, seg.bfloat16)
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))

    plain = probability(voxels)
    flips = [probability(np.flip(voxels, axis))[tuple(slice(None, None, -1) if a == axis else slice(None) for a in range(3))]
             for axis in range(3)]
    return {"none": plain, "left-right": (plain + flips[0]) / 2, "all axes": (plain + sum(flips)) / 4}


def score_fold(seg: Segmenter, image, mask, cfg: Config) -> dict:
    truth = disc_foreground(mask.voxels)
    prepared = prepare_input(seg.card, image)
    row = {}
    for name, prob in flipped_probabilities(seg, prepared.voxels).items():
        back = to_scan_grid(prepared.with_voxels(prob.astype(np.float32)), image, interpolation="linear").voxels
        row[name] = {str(t): iou_dice(back > t, truth)[1] for t in THRESHOLDS}
        if name == "none":
            measured = measure_mask(image.with_voxels((back > 0.5).astype(np.uint8)), cfg, binary=True)
            row["levels"] = {**level_agreement(measured.labels, mask.voxels), "status": str(measured.status)}
            row["errors"] = error_profile(back > 0.5, mask.voxels, image.spacing)
    return row


def error_profile(pred: np.ndarray, labels: np.ndarray, spacing) -> dict:
    """Volumes (mm^3) of the manual and predicted discs, of what was missed and what was added, the share
    of the added within 1 and 2 mm of the manual outline, and Dice per manual disc (within 3 voxels of it)."""
    from scipy import ndimage

    truth = disc_foreground(labels).astype(bool)
    voxel = float(np.prod(spacing))
    outside = ndimage.distance_transform_edt(~truth, sampling=spacing)
    added, missed = pred & ~truth, truth & ~pred
    per_disc = {}
    for label in np.unique(labels[(labels > 200) & (labels < 300)]):
        disc = labels == label
        near = pred & ndimage.binary_dilation(disc, iterations=3)
        per_disc[int(label) - 200] = iou_dice(near, disc)[1]
    return {"truth_mm3": truth.sum() * voxel, "pred_mm3": pred.sum() * voxel, "missed_mm3": missed.sum() * voxel,
            "added_mm3": added.sum() * voxel, "added_within_1mm": float((outside[added] <= 1).mean()),
            "added_within_2mm": float((outside[added] <= 2).mean()), "dice_per_level": per_disc}


def grid_ceiling(image, mask, cfg: Config) -> dict:
    truth = disc_foreground(mask.voxels)
    out = {}
    for soft in (False, True):
        item = prepare_pair(image, mask, cfg.grid, cfg.replace(seg={"soft_labels": soft}).seg)
        grid = prepare_input(make_card("unet", {}, cfg), image)
        back = to_scan_grid(grid.with_voxels(item["label"][0].astype(np.float32)), image, interpolation="linear").voxels
        out["soft" if soft else "nearest"] = iou_dice(back > 0.5, truth)[1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("/tmp/real-t2/model"))
    parser.add_argument("--archive", type=Path, default=Path("/tmp/real-t2/archive"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    cfg = Config()
    card = json.loads((args.model / "model.json").read_text())
    metrics = json.loads((args.model / "metrics.json").read_text())
    results = {}
    for fold in metrics["folds"]:
        seg = fold_network(args.model, fold["fold"], card["architecture"], cfg)
        for scan_id in fold["test_scans"]:
            image = read_scan(args.archive / "images" / f"{scan_id}.mha", cfg.limits)
            mask = read_scan(args.archive / "masks" / f"{scan_id}.mha", cfg.limits, check_voxels=False)
            results[scan_id] = {**score_fold(seg, image, mask, cfg), "grid_ceiling": grid_ceiling(image, mask, cfg)}
            print(scan_id, json.dumps(results[scan_id]), flush=True)
    scans = sorted(results)
    print("\nout-of-fold Dice, mean over", ", ".join(scans))
    for name in ("none", "left-right", "all axes"):
        print(f"  flips {name:10s}", "  ".join(f"@{t}: {np.mean([results[s][name][str(t)] for s in scans]):.4f}" for t in THRESHOLDS))
    for kind in ("nearest", "soft"):
        print(f"  grid ceiling ({kind} labels): {np.mean([results[s]['grid_ceiling'][kind] for s in scans]):.4f}",
              [round(float(results[s]["grid_ceiling"][kind]), 4) for s in scans])
    print("  levels:", {s: results[s]["levels"] for s in scans})
    for s in scans:
        e = results[s]["errors"]
        print(f"  {s}: manual {e['truth_mm3']:.0f} mm3, drawn {e['pred_mm3']:.0f}, missed {e['missed_mm3']:.0f}, added {e['added_mm3']:.0f} "
              f"({e['added_within_1mm']:.0%} within 1 mm, {e['added_within_2mm']:.0%} within 2 mm of the outline); Dice per level "
              + ", ".join(f"{k}: {v:.3f}" for k, v in e["dice_per_level"].items()))
    (args.model / "inference_bench.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
