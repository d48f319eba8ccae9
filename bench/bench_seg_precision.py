"""float32 against bfloat16 segmentation inference (``seg.inference_precision``): network seconds per
scan on one torch thread (the pipeline's segmentation actor) and Dice, with ``train-seg``'s own scoring.

Two sets of scans:
- ``--model MODEL --archive ARCHIVE [--site SITE]``: a trained segmenter on an archive's scans with masks
  (e.g. ``make demo``'s segmenter on its held-out site, ``--site site3``);
- ``--real``: each real T2 person of ../shared scored by a fit on the other two with the CLI's defaults
  (the fits of ``bench/bench_real_t2.py --ensemble-vs-final``, kept under ``WORK/fits`` and reused).

    python bench/bench_seg_precision.py --model demo-out/segmenter --archive demo-out/archive --site site3
    python bench/bench_seg_precision.py --real [--people 25 11] [--work /tmp/real-t2-ensemble]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # rayspine and tests.conftest from the checkout
PRECISIONS = ("float32", "bfloat16")


def compare(segmenters: dict, pairs: list, cfg) -> dict:
    """Both precisions on the same scans: seconds of the network alone, evaluate()'s rows, masks' agreement."""
    from rayspine.segment.infer import evaluate, prepare_input
    from rayspine.stats import iou_dice

    result, masks = {}, {}
    for precision, segmenter in segmenters.items():
        prepared = [prepare_input(segmenter.card, image) for _, image, _ in pairs]
        segmenter.logits(prepared[0])  # warm
        started = time.perf_counter()
        for volume in prepared:
            segmenter.logits(volume)
        network_s = (time.perf_counter() - started) / len(pairs)
        rows = evaluate(segmenter, pairs, cfg.discs)
        masks[precision] = [segmenter.predict(image).voxels for _, image, _ in pairs]
        result[precision] = {"network_s_per_scan": network_s,
                             "dice": statistics.fmean(r["dice"] for r in rows), "dice_discs": statistics.fmean(r["dice_discs"] for r in rows),
                             "levels_correct": sum(r.get("levels_correct", 0) for r in rows), "discs_labelled": sum(r.get("discs_labelled", 0) for r in rows),
                             "per_scan": {r["scan_id"]: round(r["dice"], 5) for r in rows}}
    agreement = [iou_dice(a, b)[1] for a, b in zip(*masks.values())]
    result["masks_dice_to_each_other"] = {"mean": statistics.fmean(agreement), "min": min(agreement)}
    result["speedup"] = result["float32"]["network_s_per_scan"] / result["bfloat16"]["network_s_per_scan"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--archive", type=Path)
    parser.add_argument("--site", default=None, help="only this site's scans (default: every scan with a mask)")
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--people", type=int, nargs="+", default=None, help="with --real: the people to score (default: all three)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/real-t2-ensemble"))
    args = parser.parse_args()

    import torch

    from rayspine.config import Config
    from rayspine.segment.infer import Segmenter

    cfg = Config()
    torch.set_num_threads(1)
    if not args.real:
        from rayspine.io import index_archive, read_scan

        index = index_archive(args.archive)
        index = index[index["mask_path"].notna() & ((index["site"] == args.site) if args.site else True)]
        pairs = [(r.scan_id, read_scan(r.image_path, cfg.limits), read_scan(r.mask_path, cfg.limits, check_voxels=False)) for r in index.itertuples()]
        print(json.dumps(compare({p: Segmenter.load(args.model, precision=p) for p in PRECISIONS}, pairs, cfg)))
        return

    from bench_real_t2 import SUBJECTS
    from rayspine.runtime import init_ray
    from rayspine.segment.infer import make_card
    from rayspine.segment.train import fit_segmenter
    from tests.conftest import load_real_subject

    init_ray()
    for held in args.people or SUBJECTS:
        others = tuple(s for s in SUBJECTS if s != held)
        net, outcome, (name, kwargs) = fit_segmenter([load_real_subject(s) for s in others], [], cfg, args.work / "fits" / "+".join(map(str, others)))
        segmenters = {p: Segmenter(net, make_card(name, kwargs, cfg), device="cpu", precision=p) for p in PRECISIONS}
        print(json.dumps({"held_out": held, "trained_on": others, "epochs": outcome.epochs, **compare(segmenters, [(str(held), *load_real_subject(held))], cfg)}), flush=True)


if __name__ == "__main__":
    main()
