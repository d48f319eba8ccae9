"""Segmentation on the three real T2 volumes of ../shared with the CLI's defaults (issue 15).

Builds a SPIDER-layout archive of subjects 11, 20 and 25 (``ribeirao_ivd_fastcleverseg``: 1 mm 3-D T2,
manual disc masks; read by ``tests/conftest.load_real_subject``) in --work, then runs exactly what the
README tells a user to run, ``rayspine train-seg ARCHIVE -o MODEL`` with no options, and prints the
protocol and the out-of-fold test figures from its ``metrics.json``. Minutes to an hour on 2 cores.

``--ensemble-vs-final`` answers the question the CV protocol leaves (issue 15.1): should the model
shipped be an ensemble of the fold networks or one final fit on every patient? With three people it is
asked one level down, on people neither candidate saw: for each person P, the other two are what a
labelled archive would be; the "final fit" trains on both (the defaults: 200 epochs, no validation
patient), the "ensemble" averages the probabilities of the two networks an inner 2-fold CV trains (one
person each). Both are scored on P (Dice, disc-instance Dice, levels). About an hour on 2 cores.

``--variant JSON`` measures one change of the training recipe the same way (issue 15.3): for each person,
a fit on the other two with the defaults and one with the change (a config fragment, e.g.
``'{"seg": {"boundary_weight": 1.0}}'``), both scored on that person. Fits are kept under --work and
reused, so the defaults' fits of ``--ensemble-vs-final`` are not trained again.

    python bench/bench_real_t2.py [--work /tmp/real-t2]
    python bench/bench_real_t2.py --ensemble-vs-final [--work /tmp/real-t2-ensemble]
    python bench/bench_real_t2.py --variant '{"seg": {"boundary_weight": 1.0}}' --tag boundary1 [--work /tmp/real-t2-ensemble]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = (11, 20, 25)
sys.path.insert(0, str(ROOT))  # rayspine and tests.conftest from the checkout


def build_archive(root: Path) -> Path:
    from rayspine.io.scans import write_scan
    from tests.conftest import load_real_subject

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for subject in SUBJECTS:
        image, mask = load_real_subject(subject)
        write_scan(image, root / "images" / f"{subject}_t2.mha")
        write_scan(mask, root / "masks" / f"{subject}_t2.mha")
    return root


class AveragedSegmenter:
    """Several networks' probabilities averaged on the network's grid, then as ``Segmenter.predict``."""

    def __init__(self, members: list):
        self.members, self.card = members, members[0].card

    def predict(self, volume):
        import numpy as np
        from scipy.special import expit, logit

        from rayspine.segment.infer import mask_from_logits, prepare_input

        prepared = prepare_input(self.card, volume)
        prob = np.mean([expit(member.logits(prepared).voxels) for member in self.members], axis=0)
        return mask_from_logits(self.card, prepared.with_voxels(logit(np.clip(prob, 1e-7, 1 - 1e-7))), volume)


def summarise_arms(rows: list[dict], arms) -> dict:
    """Per arm: mean Dice, IoU and disc-instance Dice over the held-out people, and levels right of labelled."""
    return {arm: {m: statistics.fmean(r[arm][m] for r in rows) for m in ("dice", "iou", "dice_discs")}
            | {"levels_correct": sum(r[arm].get("levels_correct", 0) for r in rows), "discs_labelled": sum(r[arm].get("discs_labelled", 0) for r in rows)}
            for arm in arms}


def ensemble_vs_final(work: Path) -> dict:
    from rayspine.config import Config
    from rayspine.runtime import init_ray
    from rayspine.segment.infer import Segmenter, evaluate, make_card
    from rayspine.segment.train import fit_segmenter
    from tests.conftest import load_real_subject

    init_ray()
    cfg = Config()  # the CLI's defaults
    volumes = {s: load_real_subject(s) for s in SUBJECTS}
    groups = [(s,) for s in SUBJECTS] + [tuple(s for s in SUBJECTS if s != held) for held in SUBJECTS]
    nets = {}
    for group in groups:  # each fit resumes from its own Ray Train folder when the bench is run again
        started = time.perf_counter()
        net, outcome, (name, kwargs) = fit_segmenter([volumes[s] for s in group], [], cfg, work / "fits" / "+".join(map(str, group)))
        nets[group] = Segmenter(net, make_card(name, kwargs, cfg))
        print(f"fit on {group}: {outcome.epochs} epochs, {time.perf_counter() - started:.0f} s", flush=True)
    rows = []
    for held in SUBJECTS:
        others = tuple(s for s in SUBJECTS if s != held)
        pair = [(str(held), *volumes[held])]
        final = evaluate(nets[others], pair, cfg.discs)[0]
        ensemble = evaluate(AveragedSegmenter([nets[(o,)] for o in others]), pair, cfg.discs)[0]
        singles = [evaluate(nets[(o,)], pair, cfg.discs)[0]["dice"] for o in others]
        rows.append({"held_out": held, "trained_on": others, "final": final, "ensemble": ensemble, "single_person_dice": singles})
        print(json.dumps(rows[-1], default=str), flush=True)
    summary = summarise_arms(rows, ("final", "ensemble"))
    summary["paired_dice_gain_ensemble_minus_final"] = [r["ensemble"]["dice"] - r["final"]["dice"] for r in rows]
    return {"rows": rows, "summary": summary}


def variant_vs_default(work: Path, change: dict, tag: str) -> dict:
    from rayspine.config import Config
    from rayspine.runtime import init_ray
    from rayspine.segment.infer import Segmenter, evaluate, make_card
    from rayspine.segment.train import fit_segmenter
    from tests.conftest import load_real_subject

    init_ray()
    arms = {"default": (Config(), work / "fits"), tag: (Config.from_dict(change), work / f"fits-{tag}")}
    volumes = {s: load_real_subject(s) for s in SUBJECTS}
    rows = []
    for held in SUBJECTS:
        others = tuple(s for s in SUBJECTS if s != held)
        row = {"held_out": held, "trained_on": others}
        for arm, (cfg, fits) in arms.items():
            started = time.perf_counter()
            net, outcome, (name, kwargs) = fit_segmenter([volumes[s] for s in others], [], cfg, fits / "+".join(map(str, others)))
            row[arm] = evaluate(Segmenter(net, make_card(name, kwargs, cfg)), [(str(held), *volumes[held])], cfg.discs)[0]
            row[arm]["fit_seconds"] = time.perf_counter() - started
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    summary = summarise_arms(rows, arms)
    summary[f"paired_dice_gain_{tag}_minus_default"] = [r[tag]["dice"] - r["default"]["dice"] for r in rows]
    return {"change": change, "rows": rows, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="default /tmp/real-t2 (/tmp/real-t2-ensemble with --ensemble-vs-final or --variant)")
    parser.add_argument("--ensemble-vs-final", action="store_true", help="the shipped model's question, one level down (see above)")
    parser.add_argument("--variant", type=json.loads, default=None, help="a config fragment measured against the defaults (see above)")
    parser.add_argument("--tag", default="variant", help="the variant's name in the results and its fits' folder")
    args = parser.parse_args()
    if args.variant is not None:
        work = args.work or Path("/tmp/real-t2-ensemble")
        started = time.perf_counter()
        result = variant_vs_default(work, args.variant, args.tag)
        result["wall_min"] = (time.perf_counter() - started) / 60
        (work / f"variant_{args.tag}.json").write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps(result["summary"], indent=2))
        return
    if args.ensemble_vs_final:
        work = args.work or Path("/tmp/real-t2-ensemble")
        started = time.perf_counter()
        result = ensemble_vs_final(work)
        result["wall_min"] = (time.perf_counter() - started) / 60
        (work / "ensemble_vs_final.json").write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps(result["summary"], indent=2))
        return
    args.work = args.work or Path("/tmp/real-t2")
    archive = build_archive(args.work / "archive")
    model = args.work / "model"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rayspine.cli", "train-seg", str(archive), "-o", str(model)], check=True, cwd=ROOT)
    metrics = json.loads((model / "metrics.json").read_text())
    print(json.dumps({"wall_min": (time.perf_counter() - started) / 60, **metrics}, indent=2, default=str))


if __name__ == "__main__":
    main()
