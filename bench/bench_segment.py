"""Seconds per scan for segmentation inference, per network (CPU unless a GPU is present).

Times ``Segmenter.predict`` end to end (canonical orientation, resampling, normalisation, sliding-window
inference, the way back to the scan's grid) on full-size synthetic scans. Weights are untrained: the
cost does not depend on their values. Reports wall and process-CPU seconds, since a shared machine
inflates wall time; the load average is printed beside them.

    .venv/bin/python bench/bench_segment.py [--scans 3] [--threads 2] [--networks unet segresnet swinunetr]
        [--precision float32 auto]   (seg.inference_precision: auto is bfloat16 on a GPU or an AMX CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--networks", nargs="+", default=["unet", "segresnet", "swinunetr"])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--precision", nargs="+", default=["auto"], help="seg.inference_precision values to time, each in turn")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    import torch

    from rayspine.config import Config
    from rayspine.io import index_archive, read_scan
    from rayspine.segment.networks import build_segmentation_net, network_spec
    from rayspine.segment.infer import Segmenter, make_card
    from rayspine.synth import synthesize_archive

    torch.set_num_threads(args.threads)
    cfg = Config()
    with tempfile.TemporaryDirectory() as tmp:
        synthesize_archive(Path(tmp), patients=args.scans, sites=min(3, args.scans), seed=0, size="full")
        scans = [read_scan(p) for p in index_archive(tmp)["image_path"]]
    results = []
    for name, precision in ((n, p) for n in args.networks for p in args.precision):
        net = build_segmentation_net(name, cfg.seg)
        segmenter = Segmenter(net, make_card(*network_spec(name, cfg.seg), cfg), device=args.device, precision=precision)
        segmenter.predict(scans[0])  # warm-up (allocator, MONAI imports)
        walls, cpus = [], []
        for scan in scans:
            wall, cpu = time.perf_counter(), time.process_time()
            segmenter.predict(scan)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        row = {
            "network": name,
            "device": str(segmenter.device),
            "precision": precision,
            "bfloat16": segmenter.bfloat16,
            "threads": args.threads,
            "scans": len(scans),
            "shape": list(scans[0].shape),
            "wall_s_median": round(statistics.median(walls), 2),
            "cpu_s_median": round(statistics.median(cpus), 2),
            "load_avg_1min": round(os.getloadavg()[0], 1),
            "params": sum(p.numel() for p in net.parameters()),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
