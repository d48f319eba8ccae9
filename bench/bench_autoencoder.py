"""Disc autoencoder benchmarks: CPU speed per epoch, and how far bottleneck 4 gets on real + synthetic discs.

    .venv/bin/python bench/bench_autoencoder.py speed --n 200 --epochs 2
    .venv/bin/python bench/bench_autoencoder.py fit --bottleneck 4 --minutes 8 --synthetic 45 --heldout-subject 25

Crops are made the way the pipeline makes them (``rayspine.measure.crops.crop_disc``: nearest-neighbour
resampling of a 1 mm disc mask to 1.4 x 1.2 x 1.5 mm, centre of mass at the crop centre). Real discs:
the 15 expert-segmented discs of ../shared/data (3 subjects x 5 lumbar discs). Synthetic discs: rounded
elliptic cylinders with lordotic wedge and tilts, sized like the real ones. Results: bench/autoencoder.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.conftest (the real-data loader)

from rayspine.autoencode.train import train_autoencoder  # noqa: E402
from rayspine.config import AEConfig  # noqa: E402
from rayspine.measure.crops import crop_disc  # noqa: E402
from rayspine.measure.geometry import disc_rotation  # noqa: E402

SPACING = (1.4, 1.2, 1.5)


def real_discs() -> tuple[np.ndarray, np.ndarray]:
    """The 15 real disc crops and the subject of each."""
    from tests.conftest import REAL_SUBJECTS, load_real_subject

    crops, subjects = [], []
    for subject in REAL_SUBJECTS:
        _, mask = load_real_subject(subject)
        for label in sorted(set(np.unique(mask.voxels)) - {0}):
            crop, status, message = crop_disc(mask.voxels == label, mask.spacing, SPACING)
            if crop is None:
                print(f"subject {subject} label {label}: {status} {message}")
                continue
            crops.append(crop)
            subjects.append(subject)
    return np.stack(crops).astype(np.uint8), np.asarray(subjects)


def synthetic_discs(n: int, seed: int = 0) -> np.ndarray:
    """Rounded elliptic cylinders on a 1 mm grid (full axes: lateral 36-52, AP 26-38, height 6-14 mm),
    with a lordotic wedge and tilts, cropped like real discs."""
    rng = np.random.default_rng(seed)
    size = 70
    axis = np.arange(size) - (size - 1) / 2
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)
    out = []
    for _ in range(n):
        lateral, ap, half_height = rng.uniform(18, 26), rng.uniform(13, 19), rng.uniform(3, 7)
        rim, wedge = rng.uniform(1.0, 4.0), rng.uniform(-0.35, 0.35)
        local = grid @ disc_rotation(rng.uniform(-20, 20), rng.uniform(-10, 10), rng.uniform(-8, 8))
        x, y, z = local[..., 0] / lateral, local[..., 1] / ap, local[..., 2]
        r2 = x**2 + y**2
        height = half_height * (1 + wedge * np.clip(y, -1, 1)) * np.sqrt(np.clip(1 - r2**rim, 0, None))
        crop, _, _ = crop_disc((r2 <= 1) & (np.abs(z) <= height), (1.0, 1.0, 1.0), SPACING)
        out.append(crop)
    return np.stack(out).astype(np.uint8)


def nearest_disc_baseline(train: np.ndarray, heldout: np.ndarray) -> np.ndarray:
    """IoU of each held-out disc with its best-matching training disc (a lookup, no model)."""
    flat = train.reshape(len(train), -1).astype(bool)
    best = []
    for crop in heldout.reshape(len(heldout), -1).astype(bool):
        inter = (flat & crop).sum(1)
        union = (flat | crop).sum(1)
        best.append((inter / np.maximum(union, 1)).max())
    return np.asarray(best)


def cmd_speed(args) -> None:
    """Seconds per epoch (training pass + eval-mode IoU pass) for each CPU set-up."""
    from rayspine.autoencode.infer import to_batch as _to_batch

    crops = synthetic_discs(args.n, seed=1)
    # Data kept uint8 until the batch vs a float32 copy of the whole set: memory, and batch-forming time.
    as_float = crops.astype(np.float32)
    idx = np.sort(np.random.default_rng(0).permutation(len(crops))[:4])
    # CPU time of this process, not wall time: the machine is shared, and wall time there measures
    # the other tenants as much as this code.
    t0 = time.process_time()
    for _ in range(50):
        _to_batch(crops[idx], torch.device("cpu"), True)
    t1 = time.process_time()
    for _ in range(50):
        torch.from_numpy(as_float[idx]).unsqueeze(1).contiguous(memory_format=torch.channels_last_3d)
    t2 = time.process_time()
    print(json.dumps({"data_MB_uint8": crops.nbytes / 2**20, "data_MB_float32": as_float.nbytes / 2**20, "batch_ms_uint8": (t1 - t0) / 50 * 1e3, "batch_ms_float32": (t2 - t1) / 50 * 1e3}), flush=True)
    del as_float
    variants = [
        ("contiguous, 1 thread", dict(channels_last=False), 1),
        ("channels-last, 1 thread", dict(channels_last=True), 1),
        ("channels-last, 2 threads", dict(channels_last=True), 2),
        ("channels-last + torch.compile, 1 thread", dict(channels_last=True, compile=True), 1),
    ]
    only = set(args.only.split(",")) if args.only else None
    rows = []
    for i, (name, kw, threads) in enumerate(variants):
        if only and str(i) not in only:
            continue
        torch.set_num_threads(threads)
        cfg = AEConfig(max_epochs=args.epochs, target_iou=1.01, **kw)
        started, cpu_started = time.perf_counter(), time.process_time()
        cpu_marks = []
        result = train_autoencoder(crops, 4, cfg, progress=lambda r: cpu_marks.append(time.process_time() - cpu_started))
        total = time.perf_counter() - started
        wall = np.diff([0.0] + [h["seconds"] for h in result.history])
        cpu = np.diff([0.0] + cpu_marks)
        rows.append(
            {
                "setup": name,
                "cpu_s_first_epoch": round(float(cpu[0]), 2),
                "cpu_s_later_epoch": round(float(np.median(cpu[1:])), 2) if len(cpu) > 1 else None,
                "wall_s_first_epoch": round(float(wall[0]), 2),
                "wall_s_later_epoch": round(float(np.median(wall[1:])), 2) if len(wall) > 1 else None,
                "wall_total_s": round(total, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def cmd_fit(args) -> None:
    """Train one bottleneck for a bounded time on synthetic + real discs; report train and unseen IoU."""
    torch.set_num_threads(args.threads)
    real, subjects = real_discs()
    synth = synthetic_discs(args.synthetic + args.synthetic_heldout, seed=args.seed)
    held_real = subjects == args.heldout_subject
    train = np.concatenate([real[~held_real], synth[: args.synthetic]])
    heldout = np.concatenate([real[held_real], synth[args.synthetic :]])
    n_real_held = int(held_real.sum())
    print(f"train {len(train)} discs ({int((~held_real).sum())} real), heldout {len(heldout)} ({n_real_held} real, subject {args.heldout_subject})", flush=True)

    cfg = AEConfig(
        max_epochs=args.max_epochs, max_minutes=args.minutes, target_iou=args.target, augment=args.augment,
        learning_rate=args.lr, batch_size=args.batch, channels=tuple(args.channels), precise_bn=args.precise_bn,
        lr_patience=args.lr_patience,
    )

    def progress(record):
        if record["epoch"] % args.every == 0 or record["converged"]:
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}), flush=True)

    out_dir = Path(args.checkpoint) if args.checkpoint else None
    result = train_autoencoder(train, args.bottleneck, cfg, out_dir=out_dir, heldout=heldout, progress=progress)
    tr, he = result.train_iou, result.heldout_iou
    if args.save:
        from rayspine.autoencode.train import save_autoencoder

        save_autoencoder(result, Path(args.save), SPACING, extra={"bench_args": vars(args)})
    n_real_train = int((~held_real).sum())
    summary = {
        "epochs": result.epochs,
        "converged": result.converged,
        "seconds": round(result.seconds, 1),
        "train_iou": float(tr.mean()),
        "train_iou_real": float(tr[:n_real_train].mean()),
        "train_iou_synthetic": float(tr[n_real_train:].mean()),
        "train_iou_min": float(tr.min()),
        "heldout_iou_real": float(he[:n_real_held].mean()),
        "heldout_iou_synthetic": float(he[n_real_held:].mean()) if len(he) > n_real_held else None,
    }
    summary["nearest_training_disc_real"] = float(nearest_disc_baseline(train, heldout[:n_real_held]).mean())
    summary["nearest_training_disc_synthetic"] = float(nearest_disc_baseline(train, heldout[n_real_held:]).mean()) if len(heldout) > n_real_held else None
    summary["args"] = vars(args)
    print(json.dumps(summary, indent=1), flush=True)
    if args.json:
        per_disc = {"train": tr.tolist(), "heldout": he.tolist()}
        Path(args.json).write_text(json.dumps({"summary": summary, "history": result.history, "per_disc": per_disc}, indent=1))


def cmd_sweep(args) -> None:
    """The real sweep (Ray Tune, trials in parallel) on the bench crops, with a training-time budget."""
    import pandas as pd
    import ray

    from rayspine.config import Config
    from rayspine.io.store import write_crops_zarr
    from rayspine.autoencode.sweep import run_sweep

    real, subjects = real_discs()
    synth = synthetic_discs(args.synthetic, seed=args.seed)
    folder = Path(args.out) / "crops"
    rows = []
    for name, crops in [*((f"real-{s}", real[subjects == s]) for s in np.unique(subjects)), *((f"synth-{i}", synth[i : i + 5]) for i in range(0, len(synth), 5))]:
        write_crops_zarr(folder / "crops.zarr", name, crops, list(range(1, len(crops) + 1)))
        rows += [{"scan_id": name, "patient_id": name, "level": j + 1, "status": "ok", "crop_index": j} for j in range(len(crops))]
    pd.DataFrame(rows).to_parquet(folder / "discs.parquet")
    cfg = Config().replace(ae={"bottlenecks": tuple(args.bottlenecks), "max_minutes": args.minutes, "heldout_fraction": args.heldout, "precise_bn": args.precise_bn})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        table = run_sweep([folder], Path(args.out) / "sweep", cfg)
    finally:
        ray.shutdown()
    print(table.to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--n", type=int, default=200)
    s.add_argument("--epochs", type=int, default=2)
    s.add_argument("--only", default="", help="comma-separated variant numbers")
    s.add_argument("--json", default="")
    f = sub.add_parser("fit")
    f.add_argument("--bottleneck", type=int, default=4)
    f.add_argument("--minutes", type=float, default=8)
    f.add_argument("--max-epochs", type=int, default=1000)
    f.add_argument("--target", type=float, default=0.995)
    f.add_argument("--synthetic", type=int, default=45)
    f.add_argument("--synthetic-heldout", type=int, default=10)
    f.add_argument("--heldout-subject", type=int, default=25)
    f.add_argument("--augment", action="store_true")
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--batch", type=int, default=4)
    f.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128])
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--every", type=int, default=10)
    f.add_argument("--checkpoint", default="")
    f.add_argument("--precise-bn", action="store_true")
    f.add_argument("--lr-patience", type=int, default=0)
    f.add_argument("--save", default="", help="folder for the trained model (model.safetensors + model.json)")
    f.add_argument("--json", default="")
    w = sub.add_parser("sweep")
    w.add_argument("--out", default="/tmp/aebench/sweep_demo")
    w.add_argument("--bottlenecks", type=int, nargs="+", default=[64, 8, 4, 3])
    w.add_argument("--minutes", type=float, default=3)
    w.add_argument("--synthetic", type=int, default=45)
    w.add_argument("--heldout", type=float, default=0.2)
    w.add_argument("--precise-bn", action="store_true")
    w.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    {"speed": cmd_speed, "fit": cmd_fit, "sweep": cmd_sweep}[args.cmd](args)


if __name__ == "__main__":
    main()
