"""Held-out evaluation by person of the disc autoencoder against PCA, nearest-disc and mean-shape baselines.

The 190 real discs of ../shared/data/ribeirao_ivd_masks (38 people x 5 lumbar discs, 0.43 x 0.43 x 4.4 mm),
cropped by the project's own measure code (``measure_mask``: centre-of-mass crops, 64^3 on 1.4 x 1.2 x 1.5
mm), split into k = 5 folds by person (``autoencode.baselines.subject_folds``). Per fold: baselines fitted
on the training people, the autoencoder trained with ``train_autoencoder``, both scored on the
held-out people's discs (IoU and Dice per disc).

    python bench/bench_ae_heldout.py crops --method nearest          # cache the crops (/tmp, not the repo)
    python bench/bench_ae_heldout.py baselines --method nearest
    python bench/bench_ae_heldout.py ae --fold 0 --bottleneck 4 --max-epochs 60 --tag paper
    python bench/bench_ae_heldout.py ae --fold 0 --bottleneck 4 --max-epochs 60 --eval-every 5 --cosine --tag cosine
    python bench/bench_ae_heldout.py ae --fold 0 --bottleneck 4 --max-epochs 100 --val-patience 15 --tag es
    python bench/bench_ae_heldout.py ae --fold 0 ... --latent-noise 0.1 --average-last 15 --tag reg   # regularisers (session 13)
    python bench/bench_ae_heldout.py variants --fold 0   # one row per run of fold 0 (the variant table)
    python bench/bench_ae_heldout.py paired MEASURED HELDOUT_A HELDOUT_B   # two `train-ae --heldout-folds` runs, same discs
    python bench/bench_ae_heldout.py report            # bench/ae_heldout.md tables from the json results

Results are json files in --work (default /tmp/rayspine_heldout); one torch thread per run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rayspine import stats  # noqa: E402
from rayspine.autoencode import baselines as sb  # noqa: E402

MASKS = ROOT.parent / "shared" / "data" / "ribeirao_ivd_masks" / "masks"
if not MASKS.is_dir():
    MASKS = Path("/work/shared/data/ribeirao_ivd_masks/masks")
K = 5


def crops_path(work: Path, method: str) -> Path:
    return work / f"crops_{method}.npz"


def build_crops(method: str, work: Path) -> dict:
    """Crops of every disc of the real masks, made by ``measure_mask`` with ``crop_resampling=method``;
    a method ending in ``_disc_plane`` (``slices_disc_plane``) also tilts each disc flat (``crop_frame``)."""
    from rayspine.config import Config
    from rayspine.io.scans import read_scan
    from rayspine.measure.scan import measure_mask

    path = crops_path(work, method)
    if path.is_file():
        data = np.load(path)
        return {k: data[k] for k in data.files}
    resampling, _, frame = method.partition("_")
    cfg = Config().replace(discs={"crop_resampling": resampling, "crop_frame": frame or "scan"})
    crops, subjects, levels = [], [], []
    started = time.perf_counter()
    for file in sorted(MASKS.glob("subject_*.nii.gz")):
        subject = int(re.findall(r"\d+", file.name)[0])
        measured = measure_mask(read_scan(file, cfg.limits, check_voxels=False), cfg)
        for row in measured.rows:
            if row["crop_index"] < 0:
                print(f"subject {subject} level {row['level']}: no crop ({row['status']}: {row['message']})")
        crops.append(measured.crops)
        subjects += [subject] * len(measured.levels)
        levels += list(measured.levels)
    data = {"crops": np.concatenate(crops).astype(np.uint8), "subjects": np.asarray(subjects), "levels": np.asarray(levels)}
    work.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **data)
    print(f"{method}: {len(data['crops'])} crops from {len(set(subjects))} people in {time.perf_counter() - started:.0f} s -> {path}")
    return data


def cmd_crops(args) -> None:
    for method in args.method.split(","):
        build_crops(method, Path(args.work))


def cmd_baselines(args) -> None:
    data = build_crops(args.method, Path(args.work))
    crops, subjects = data["crops"], data["subjects"]
    folds = sb.subject_folds(subjects, K)
    results = {}
    for f, (train, test) in enumerate(folds):
        assert not set(subjects[train]) & set(subjects[test])
        started = time.perf_counter()
        preds = sb.baseline_predictions(crops[train], crops[test], pca_components=(4, 8, 64))
        for name, pred in preds.items():
            scores = stats.overlap_scores(crops[test], pred)
            entry = results.setdefault(name, {"index": [], "iou": [], "dice": [], "fold": []})
            entry["index"] += test.tolist()
            entry["iou"] += scores["iou"].tolist()
            entry["dice"] += scores["dice"].tolist()
            entry["fold"] += [f] * len(test)
        print(f"fold {f}: {len(train)} train / {len(test)} test discs, baselines in {time.perf_counter() - started:.1f} s; "
              + ", ".join(f"{n} {np.mean(results[n]['iou'][-len(test):]):.3f}" for n in preds), flush=True)
    out = Path(args.work) / f"baselines_{args.method}.json"
    out.write_text(json.dumps(results))
    print(out)


def _bench_network(latent_noise: float, instances: list):
    """The registered name of the default network with Gaussian noise on its code while training:
    ``latent_noise`` times each code's spread over the batch (so scaling the codes up does not shrink
    it). Each instance is appended to ``instances`` (for averaging its weights from the progress hook)."""
    import torch
    from torch import nn

    from rayspine.autoencode.networks.conv import DiscAutoencoder
    from rayspine.io.cards import AUTOENCODER, register

    @register(AUTOENCODER, "conv_bench")
    class NoisyCode(DiscAutoencoder):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            instances.append(self)

        def loss(self, x):
            z = self.encode(x)
            if latent_noise > 0 and self.training:
                z = z + latent_noise * z.detach().std(dim=0, keepdim=True) * torch.randn_like(z)
            return nn.functional.binary_cross_entropy_with_logits(self.decode(z).float(), x)

    return "conv_bench"


def cmd_ae(args) -> None:
    import torch

    from rayspine.autoencode.train import calibrate_threshold, evaluate_iou, recalibrate_batch_norm, train_autoencoder
    from rayspine.config import AEConfig

    torch.set_num_threads(args.threads)
    data = build_crops(args.method, Path(args.work))
    crops, subjects = data["crops"], data["subjects"]
    train, test = sb.subject_folds(subjects, K)[args.fold]
    validation = None
    if args.val_patience > 0 or args.inner_val:
        train, val = sb.inner_split(train, subjects, K)
        validation = crops[val]
    cfg = AEConfig(
        max_epochs=args.max_epochs, target_iou=args.target, augment=args.augment, augment_shift=args.shift,
        augment_rotate_deg=args.rotate[0] if len(args.rotate) == 1 else tuple(args.rotate), augment_scale=args.scale, weight_decay=args.weight_decay, val_patience=args.val_patience, learning_rate=args.lr, lr_patience=args.lr_patience,
        seed=args.seed, eval_every=args.eval_every, lr_cosine=args.cosine,
        channels=tuple(int(c) for c in args.channels.split(",")), batch_size=args.batch_size,
    )
    nets, averaged = [], {}
    if args.latent_noise > 0 or args.average_last > 0:
        cfg = dataclasses.replace(cfg, model=_bench_network(args.latent_noise, nets))
    print(f"fold {args.fold}, {args.method} crops: train {len(train)} discs ({len(set(subjects[train]))} people), "
          f"validation {0 if validation is None else len(validation)}, test {len(test)} ({len(set(subjects[test]))} people); {cfg}", flush=True)

    def progress(r):
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
        if args.average_last > 0 and r["epoch"] > args.max_epochs - args.average_last:  # stochastic weight averaging
            if "model" not in averaged:
                averaged["model"] = torch.optim.swa_utils.AveragedModel(nets[-1])
            else:
                averaged["model"].update_parameters(nets[-1])

    result = train_autoencoder(crops[train], args.bottleneck, cfg, heldout=crops[test], validation=validation, progress=progress)
    if averaged:  # the averaged weights, batch norm re-estimated for them, threshold fitted as the trainer does
        net = averaged["model"].module
        recalibrate_batch_norm(net, crops[train], channels_last=False)
        averaged["threshold"], fit = calibrate_threshold(net, crops[train], channels_last=False)
        averaged.update(train_iou=float(fit.mean()), test_iou=float(evaluate_iou(net, crops[test], channels_last=False).mean()))
    # The trained weights with batch norm's statistics re-estimated on the unaugmented training crops (they
    # were gathered on augmented batches) and the threshold refitted for them: a check, not the product's.
    refit = copy.deepcopy(result.net)
    recalibrate_batch_norm(refit, crops[train], channels_last=False)
    refit_threshold, fit = calibrate_threshold(refit, crops[train], channels_last=False)
    bn_refit = {"threshold": refit_threshold, "train_iou": float(fit.mean()), "test_iou": float(evaluate_iou(refit, crops[test], channels_last=False).mean())}
    history = result.history
    scored = [h for h in history if np.isfinite(h["heldout_iou"])]  # with --eval-every n, every n-th epoch and the last
    test_curve = np.array([h["heldout_iou"] for h in scored])
    best_epoch = scored[int(np.argmax([h["val_iou"] for h in scored]))]["epoch"] if validation is not None and scored else result.epochs
    # The held-out mean jitters by 0.01-0.05 between epochs (Adam at a constant rate, batch norm from
    # batches of 4); the mean over the scored epochs of the second half is a steadier level to compare
    # variants by. It is a description of the curve, not a model selection (no epoch is chosen).
    late = np.array([h["heldout_iou"] for h in scored if h["epoch"] > result.epochs / 2])
    summary = {
        "tag": args.tag, "fold": args.fold, "bottleneck": args.bottleneck, "method": args.method,
        "epochs": result.epochs, "best_val_epoch": best_epoch, "seconds": result.seconds,
        "seconds_per_epoch": result.seconds / max(1, result.epochs),
        "cpu_seconds_process": time.process_time(),  # this process's CPU time (one torch thread)
        "train_iou": float(result.train_iou.mean()), "test_iou": float(result.heldout_iou.mean()),
        "test_peak_iou": float(test_curve.max()) if len(test_curve) else float("nan"),
        "test_peak_epoch": scored[int(np.argmax(test_curve))]["epoch"] if len(test_curve) else 0,
        "test_late_mean": float(late.mean()) if len(late) else float("nan"),
        "cpu_seconds_per_epoch": history[-1]["cpu_seconds"] / max(1, result.epochs) if history else float("nan"),
        "decision_threshold": result.decision_threshold,
        "averaged": {k: v for k, v in averaged.items() if k != "model"},  # --average-last: the averaged weights' figures
        "bn_refit": bn_refit,
        "args": {k: v for k, v in vars(args).items() if k != "func"},
    }
    print(json.dumps(summary, indent=1), flush=True)
    out = Path(args.work) / f"ae_{args.tag}_bn{args.bottleneck}_fold{args.fold}.json"
    iou = result.heldout_iou
    per_disc = {"index": test.tolist(), "iou": iou.tolist(), "dice": stats.dice_from_iou(iou).tolist()}
    out.write_text(json.dumps({"summary": summary, "history": history, "per_disc": per_disc}))
    torch.save(result.net.state_dict(), out.with_suffix(".pt"))  # for test-time checks of the fold's model
    print(out)


def cmd_probe(args) -> None:
    """Data-level checks without training: the full linear span of the training discs (PCA with every
    component), and whether left-right mirrored copies of the training discs help PCA and the lookup."""
    from rayspine.autoencode.augment import flip_left_right

    data = build_crops(args.method, Path(args.work))
    crops, subjects = data["crops"], data["subjects"]
    res: dict[str, list] = {}
    for train, test in sb.subject_folds(subjects, K):
        t = crops[train]
        tf = np.concatenate([t, np.stack([flip_left_right(c) for c in t])])
        r = {f"pca{k}": sb.pca_reconstruct(t, crops[test], k) for k in (4, 8, 64, len(t) - 1)}
        r.update({f"pca{k} + mirrored copies": sb.pca_reconstruct(tf, crops[test], k) for k in (4, 8, 64)})
        r["nearest + mirrored copies"] = sb.nearest_disc(tf, crops[test])[1]
        for name, pred in r.items():
            res.setdefault(name.replace(str(len(t) - 1), "-all (every training disc's span)"), []).append(stats.overlap_scores(crops[test], pred)["iou"].mean())
        for k in (4, 64):
            res.setdefault(f"pca{k}, scored on its own training discs", []).append(stats.overlap_scores(t, sb.pca_reconstruct(t, t, k))["iou"].mean())
    print("| model | mean held-out IoU over the 5 folds (fold means) |\n|---|---|")
    for name, v in res.items():
        print(f"| {name} | {np.mean(v):.3f} ({', '.join(f'{x:.3f}' for x in v)}) |")


def _summary_row(name: str, iou, dice, groups) -> str:
    m, lo, hi = stats.mean_t_ci(iou)
    _, blo, bhi = stats.mean_grouped_bootstrap_ci(iou, groups)
    d, dlo, dhi = stats.mean_t_ci(dice)
    return f"| {name} | {len(iou)} | **{m:.3f}** ({lo:.3f}-{hi:.3f}) | {blo:.3f}-{bhi:.3f} | {d:.3f} ({dlo:.3f}-{dhi:.3f}) |"


def _log_history(path: Path) -> list[dict]:
    """The per-epoch records an ``ae`` run printed (its log), for a run whose json was not written."""
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith('{"epoch"'):
            rows.append(json.loads(line.replace("NaN", "null")))
    return rows


def cmd_fold_means(args) -> None:
    """Per-fold mean held-out IoU at the last epoch (and the peak) of every ``ae`` run, from the json when
    there is one and from the run's log otherwise; the pooled mean over discs weights folds by size."""
    work = Path(args.work)
    data = build_crops(args.method, work)
    sizes = [len(test) for _, test in sb.subject_folds(data["subjects"], K)]
    print("| fold | discs | epochs | source | train IoU | held-out IoU, last epoch | held-out peak (epoch) |\n|---|---|---|---|---|---|---|")
    finals = []
    for fold in range(K):
        jpath = work / f"ae_{args.tag}_bn{args.bottleneck}_fold{fold}.json"
        lpath = work / "logs" / f"{args.tag}_f{fold}.log"
        if jpath.is_file():
            history, source = json.loads(jpath.read_text())["history"], "json"
        elif lpath.is_file():
            history, source = _log_history(lpath), "log"
        else:
            continue
        history = [h for h in history if h.get("heldout_iou") is not None and np.isfinite(h["heldout_iou"])]  # scored epochs
        if not history:
            continue
        last = history[-1]
        peak = int(np.argmax([h["heldout_iou"] for h in history]))
        finals.append((sizes[fold], last["heldout_iou"]))
        print(f"| {fold} | {sizes[fold]} | {last['epoch']} | {source} | {last['train_iou']:.3f} | {last['heldout_iou']:.3f} | {history[peak]['heldout_iou']:.3f} ({history[peak]['epoch']}) |")
    if finals:
        n, m = np.array(finals).T
        _, lo, hi = stats.mean_t_ci(m)
        print(f"\npooled over {int(n.sum())} discs: {np.sum(n * m) / n.sum():.3f}; mean of {len(m)} fold means {m.mean():.3f} (t-CI over folds {lo:.3f}-{hi:.3f})")
    base = work / f"baselines_{args.method}.json"
    if finals and base.is_file():
        folds_done = [f for f in range(K) if (work / f"ae_{args.tag}_bn{args.bottleneck}_fold{f}.json").is_file() or (work / "logs" / f"{args.tag}_f{f}.log").is_file()]
        print(f"\nbaselines on the same folds {folds_done}:\n\n| model | pooled IoU | per fold |\n|---|---|---|")
        for name, r in json.loads(base.read_text()).items():
            iou, fold = np.asarray(r["iou"]), np.asarray(r["fold"])
            keep = np.isin(fold, folds_done)
            print(f"| {name} | {iou[keep].mean():.3f} | " + ", ".join(f"{iou[fold == f].mean():.3f}" for f in folds_done) + " |")


def cmd_paired(args) -> None:
    """Two ``rayspine train-ae --heldout-folds`` outputs (say k = 5 and k = 10) on the same discs: per method,
    the mean held-out IoU of each over the discs both scored (folds a stopped run finished), and the paired
    difference. Folds by person with more folds train each model on more people: this is that effect."""
    import pandas as pd

    from rayspine.autoencode.baselines import baseline_predictions, subject_folds
    from rayspine.autoencode.heldout import FOLDS_DIR, load_crops

    crops, meta = load_crops([Path(args.measured)])
    patients = meta["patient_id"].astype(str).to_numpy()
    tables = []
    for out, folds in zip((Path(args.a), Path(args.b)), args.folds):
        splits = subject_folds(patients, folds)
        rows = []
        for f, (train, test) in enumerate(splits):
            file = out / FOLDS_DIR / f"bn{args.bottleneck}_fold{f}.json"
            if not file.is_file():
                continue
            ae = json.loads(file.read_text())["iou"]
            pca = stats.overlap_scores(crops[test], baseline_predictions(crops[train], crops[test], pca_components=[args.bottleneck])[f"pca{args.bottleneck}"])["iou"]
            rows.append(pd.DataFrame({"disc": test, "autoencoder": ae, f"pca{args.bottleneck}": pca, "train_discs": len(train)}))
        tables.append(pd.concat(rows).set_index("disc"))
    both = tables[0].merge(tables[1], left_index=True, right_index=True, suffixes=("_a", "_b"))
    print(f"{len(both)} discs scored by both; training discs per model {both.train_discs_a.mean():.0f} (a) and {both.train_discs_b.mean():.0f} (b)\n")
    print("| model | a | b | b - a (95 % CI, discs) | discs better in b |\n|---|---:|---:|---|---:|")
    for name in ("autoencoder", f"pca{args.bottleneck}"):
        diff = both[f"{name}_b"] - both[f"{name}_a"]
        m, lo, hi = stats.mean_t_ci(diff.to_numpy())
        print(f"| {name} | {both[f'{name}_a'].mean():.4f} | {both[f'{name}_b'].mean():.4f} | {m:+.4f} ({lo:+.4f} to {hi:+.4f}) | {(diff > 0).mean():.0%} |")


def cmd_variants(args) -> None:
    """One row per ``ae`` run of a fold (json files, or logs of runs that wrote none): the held-out IoU at
    the last epoch, its mean over the scored epochs of the second half (every 5th epoch, so that runs
    scored every epoch and every 5th compare alike), the peak, and the CPU seconds per epoch."""
    work = Path(args.work)
    base = {}
    for method in ("nearest", "distance"):
        path = work / f"baselines_{method}.json"
        if path.is_file():
            r = json.loads(path.read_text())["pca4"]
            iou, fold = np.asarray(r["iou"]), np.asarray(r["fold"])
            base[method] = {f: iou[fold == f].mean() for f in range(K)}
    runs = {}
    for file in sorted(work.glob(f"ae_*_bn{args.bottleneck}_fold{args.fold}.json")):
        result = json.loads(file.read_text())
        runs[result["summary"]["tag"]] = (result["summary"]["method"], result["history"], "json")
    for file in sorted((work / "logs").glob(f"*_f{args.fold}.log")):
        tag = file.name[: -len(f"_f{args.fold}.log")]
        if tag not in runs and _log_history(file):
            runs[tag] = ("nearest", _log_history(file), "log")
    print("| run | crops | epochs | train IoU, last | held-out IoU, last | held-out, mean of the 2nd half (every 5th epoch) | peak, every 5th epoch (epoch) | PCA-4, same crops | CPU s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tag, (method, history, source) in runs.items():
        scored = [h for h in history if h.get("heldout_iou") is not None and np.isfinite(h["heldout_iou"]) and np.isfinite(h["train_iou"])]
        if len(scored) < 2 or scored[-1]["epoch"] < args.min_epochs:
            continue
        last = scored[-1]
        every5 = [h for h in scored if h["epoch"] % 5 == 0 or h is last]  # the same epochs whatever the run scored
        late = [h["heldout_iou"] for h in every5 if h["epoch"] > last["epoch"] / 2]
        peak = max(every5, key=lambda h: h["heldout_iou"])
        cpu = f"{history[-1]['cpu_seconds'] / history[-1]['epoch']:.1f}" if "cpu_seconds" in history[-1] else "n/a"
        pca = f"{base[method][args.fold]:.3f}" if method in base else ""
        print(f"| {tag} | {method} | {last['epoch']} | {last['train_iou']:.3f} | {last['heldout_iou']:.3f} | {np.mean(late):.3f} | "
              f"{peak['heldout_iou']:.3f} ({peak['epoch']}) | {pca} | {cpu} |")


def cmd_report(args) -> None:
    """Print the markdown tables of every finished 5-fold set (baselines and AE tags)."""
    work = Path(args.work)
    for method in args.method.split(","):
        data = build_crops(method, work)
        subjects = data["subjects"]
        print(f"\n### crops: {method} ({len(subjects)} discs, {len(set(subjects))} people)\n")
        print("| model | discs | IoU mean (95 % t-CI over discs) | IoU 95 % CI, bootstrap over people | Dice mean (95 % CI) |")
        print("|---|---|---|---|---|")
        base = work / f"baselines_{method}.json"
        if base.is_file():
            for name, r in json.loads(base.read_text()).items():
                print(_summary_row(name, np.asarray(r["iou"]), np.asarray(r["dice"]), subjects[np.asarray(r["index"])]))
        runs: dict[str, list] = {}
        for file in sorted(work.glob("ae_*_fold*.json")):
            result = json.loads(file.read_text())
            if result["summary"]["method"] != method:
                continue
            runs.setdefault(f"AE {result['summary']['tag']} bn{result['summary']['bottleneck']}", []).append(result)
        for name, results in sorted(runs.items()):
            folds = sorted(r["summary"]["fold"] for r in results)
            index = np.concatenate([r["per_disc"]["index"] for r in results])
            iou = np.concatenate([r["per_disc"]["iou"] for r in results])
            dice = np.concatenate([r["per_disc"]["dice"] for r in results])
            label = name if len(folds) == K else f"{name} (folds {folds} only)"
            print(_summary_row(label, iou, dice, subjects[index]))
        if runs:
            print("\n| AE run | fold | epochs (best val) | s/epoch | train IoU | test IoU | test peak (epoch) |\n|---|---|---|---|---|---|---|")
            for name, results in sorted(runs.items()):
                for r in sorted(results, key=lambda r: r["summary"]["fold"]):
                    s = r["summary"]
                    print(f"| {name} | {s['fold']} | {s['epochs']} ({s['best_val_epoch']}) | {s['seconds_per_epoch']:.1f} | {s['train_iou']:.3f} | {s['test_iou']:.3f} | {s['test_peak_iou']:.3f} ({s['test_peak_epoch']}) |")
        # paired, per disc: the same disc scored by the AE and by a baseline (a tighter comparison than two
        # separate intervals, since hard discs are hard for every model)
        if base.is_file():
            b = json.loads(base.read_text())
            complete = {n: rs for n, rs in runs.items() if len(rs) == K}
            if complete:
                print("\n| paired difference (per disc) | discs | mean (95 % t-CI over discs) | 95 % CI, bootstrap over people | discs where the AE is better |\n|---|---|---|---|---|")
            for name, results in sorted(complete.items()):
                index = np.concatenate([r["per_disc"]["index"] for r in results])
                iou = np.concatenate([r["per_disc"]["iou"] for r in results])
                for other in ("pca4", "pca8", "pca64", "nearest_iou"):
                    ref = dict(zip(b[other]["index"], b[other]["iou"]))
                    diff = iou - np.array([ref[i] for i in index])
                    m, lo, hi = stats.mean_t_ci(diff)
                    _, blo, bhi = stats.mean_grouped_bootstrap_ci(diff, subjects[index])
                    print(f"| {name} - {other} | {len(diff)} | {m:+.3f} ({lo:+.3f} to {hi:+.3f}) | {blo:+.3f} to {bhi:+.3f} | {int((diff > 0).sum())} of {len(diff)} |")
        # AE run against AE run on the discs both scored (e.g. a variant against the paper recipe)
        names = sorted(runs)
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        if pairs:
            print("\n| AE runs, paired on their common discs | discs | mean difference (95 % t-CI) | bootstrap over people | folds |\n|---|---|---|---|---|")
        for a, b in pairs:
            per = {n: {i: (v, r["summary"]["fold"]) for r in runs[n] for i, v in zip(r["per_disc"]["index"], r["per_disc"]["iou"])} for n in (a, b)}
            common = sorted(set(per[a]) & set(per[b]))
            if len(common) < 3:
                continue
            diff = np.array([per[a][i][0] - per[b][i][0] for i in common])
            m, lo, hi = stats.mean_t_ci(diff)
            _, blo, bhi = stats.mean_grouped_bootstrap_ci(diff, subjects[common])
            print(f"| {a} - {b} | {len(common)} | {m:+.3f} ({lo:+.3f} to {hi:+.3f}) | {blo:+.3f} to {bhi:+.3f} | {sorted({per[a][i][1] for i in common})} |")
        # by level (1 = L5/S1): which discs are hard
        levels = data["levels"]
        table = {}
        if base.is_file():
            for name, r in json.loads(base.read_text()).items():
                table[name] = (np.asarray(r["index"]), np.asarray(r["iou"]))
        for name, results in sorted(runs.items()):
            table[name] = (np.concatenate([r["per_disc"]["index"] for r in results]), np.concatenate([r["per_disc"]["iou"] for r in results]))
        if table:
            names = sorted(set(levels.tolist()))
            print("\n| model | " + " | ".join(f"level {v}" for v in names) + " |\n|---" * 1 + "|---" * len(names) + "|")
            for name, (index, iou) in table.items():
                print(f"| {name} | " + " | ".join(f"{iou[levels[index] == v].mean():.3f}" for v in names) + " |")
        # baselines restricted to folds, for comparison with a partial AE run
        if base.is_file():
            folds_seen = sorted({r["summary"]["fold"] for rs in runs.values() for r in rs})
            b = json.loads(base.read_text())
            for f in folds_seen:
                line = ", ".join(f"{n} {np.mean([v for v, ff in zip(r['iou'], r['fold']) if ff == f]):.3f}" for n, r in b.items())
                print(f"\nbaselines on fold {f}: {line}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/rayspine_heldout")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("crops")
    c.add_argument("--method", default="nearest")
    c.set_defaults(func=cmd_crops)
    b = sub.add_parser("baselines")
    b.add_argument("--method", default="nearest")
    b.set_defaults(func=cmd_baselines)
    a = sub.add_parser("ae")
    a.add_argument("--method", default="nearest")
    a.add_argument("--fold", type=int, default=0)
    a.add_argument("--bottleneck", type=int, default=4)
    a.add_argument("--max-epochs", type=int, default=60)
    a.add_argument("--target", type=float, default=0.995)
    a.add_argument("--val-patience", type=int, default=0)
    a.add_argument("--inner-val", action="store_true", help="hold out inner-validation people (scored) without early stopping")
    a.add_argument("--weight-decay", type=float, default=0.0)
    a.add_argument("--augment", action="store_true", help="left-right flips")
    a.add_argument("--rotate", type=float, nargs="+", default=[0.0], help="random rotations of up to this many degrees about each axis (or three limits, one per crop axis)")
    a.add_argument("--scale", type=float, default=0.0, help="random stretch of each axis by up to 1 +- this")
    a.add_argument("--shift", type=int, default=0, help="random roll of up to this many voxels per axis")
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--lr-patience", type=int, default=0)
    a.add_argument("--cosine", action="store_true", help="cosine learning-rate decay to 0 over --max-epochs (AEConfig.lr_cosine)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--channels", default="16,32,64,128", help="encoder widths (AEConfig.channels)")
    a.add_argument("--batch-size", type=int, default=4)
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--tag", default="paper")
    a.add_argument("--eval-every", type=int, default=1, help="score the discs every n-th epoch and the last (AEConfig.eval_every)")
    a.add_argument("--latent-noise", type=float, default=0.0, help="Gaussian noise on the code while training, times the code's spread in the batch")
    a.add_argument("--average-last", type=int, default=0, help="also score the average of the weights of the last n epochs (SWA)")
    a.set_defaults(func=cmd_ae)
    q = sub.add_parser("probe")
    q.add_argument("--method", default="nearest")
    q.set_defaults(func=cmd_probe)
    fm = sub.add_parser("fold-means")
    fm.add_argument("--method", default="nearest")
    fm.add_argument("--tag", default="paper")
    fm.add_argument("--bottleneck", type=int, default=4)
    fm.set_defaults(func=cmd_fold_means)
    v = sub.add_parser("variants")
    v.add_argument("--fold", type=int, default=0)
    v.add_argument("--bottleneck", type=int, default=4)
    v.add_argument("--min-epochs", type=int, default=20, help="leave out runs stopped before this epoch")
    v.set_defaults(func=cmd_variants)
    pr = sub.add_parser("paired")
    pr.add_argument("measured", help="the `rayspine measure` output both were trained on")
    pr.add_argument("a", help="a `train-ae --heldout-folds K` output folder")
    pr.add_argument("b", help="another, with more (or fewer) folds")
    pr.add_argument("--folds", type=int, nargs=2, default=(5, 10), help="their fold counts (--heldout-folds)")
    pr.add_argument("--bottleneck", type=int, default=4)
    pr.set_defaults(func=cmd_paired)
    r = sub.add_parser("report")
    r.add_argument("--method", default="nearest")
    r.set_defaults(func=cmd_report)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
