"""Replication of the paper's steps 2, 3 and 5 on the 190 real discs of ../shared (issue 14.5).

Runs the product's own commands on the real manual masks (``ribeirao_ivd_masks``: 38 people x 5 lumbar
discs, 0.43 x 0.43 x 4.4 mm), nothing else:

    rayspine measure MASKS -o WORK/measured
    rayspine train-ae WORK/measured -o WORK/sweep --bottleneck 64 8 4 3 [--max-epochs N] [--max-minutes M]
    rayspine interpret --ae WORK/sweep/bn4 --features WORK/measured/discs.parquet -o WORK/interpret

then puts each claim of the paper beside our figure with its 95 % interval: ``WORK/replication.md`` and
``replication.json``. With the CLI defaults (up to 1000 epochs per size) this is hours on 2 CPU cores;
``tests/test_replication.py`` runs it behind ``-m slow``.

    python bench/bench_replication.py [--work /tmp/replication] [--bottleneck 64 8 4 3] [--max-epochs N] [--max-minutes M] [--config FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MASKS = ROOT.parent / "shared" / "data" / "ribeirao_ivd_masks" / "masks"
# The paper's figures (Perrone et al. 2025): epochs to eval-mode training IoU > 0.995 per bottleneck
# (None: never), bottleneck 4's IoU, and the latent correlations of step 5.
PAPER_EPOCHS = {64: 190, 8: 199, 4: 350, 3: None}
PAPER = {"bn4_train_iou": 0.9984, "latent_pairs_max_abs_r": 0.05, "ap_width_mm": -0.80, "sagittal_angle_deg": -0.75}


def rayspine(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rayspine.cli", *args], check=True, cwd=ROOT)


def run(work: Path, bottlenecks: list[int], max_epochs: int | None, max_minutes: float | None = None, config: Path | None = None) -> dict:
    started = time.perf_counter()
    measured, sweep, interpret = work / "measured", work / "sweep", work / "interpret"
    rayspine("measure", str(MASKS), "-o", str(measured))
    rayspine("train-ae", str(measured), "-o", str(sweep), "--bottleneck", *map(str, bottlenecks), *(["--max-epochs", str(max_epochs)] if max_epochs else []),
             *(["--max-minutes", str(max_minutes)] if max_minutes else []), *(["--config", str(config)] if config else []))
    model = sweep / ("bn4" if 4 in bottlenecks else json.loads((sweep / "default.json").read_text())["model"])
    rayspine("interpret", "--ae", str(model), "--features", str(measured / "discs.parquet"), "-o", str(interpret))
    result = claims(sweep, interpret, int(model.name[2:]))
    result.update(wall_min=(time.perf_counter() - started) / 60, max_epochs=max_epochs, max_minutes=max_minutes, bottlenecks=bottlenecks,
                  config=json.loads(Path(config).read_text()) if config else {})
    (work / "replication.json").write_text(json.dumps(result, indent=2, default=float))
    (work / "replication.md").write_text(markdown(result))
    return result


def claims(sweep: Path, interpret: Path, k: int) -> dict:
    """Our figure for each claim, from the sweep table and the interpretation's correlation table."""
    from rayspine.stats import pearson_ci

    table = pd.read_csv(sweep / "sweep.csv").set_index("bottleneck")
    convergence = {int(b): {"converged": bool(row.converged), "epochs": int(row.epochs), "train_iou": float(row.train_iou),
                            "ci": [float(row.train_iou_ci_low), float(row.train_iou_ci_high)]} for b, row in table.iterrows()}
    converged = sorted(b for b, c in convergence.items() if c["converged"])
    corr = pd.read_csv(interpret / "correlation.csv")
    latents = sorted(set(corr.latent))
    pairs = corr[corr.feature.isin(latents) & (corr.latent < corr.feature)]
    worst = pairs.loc[pairs.r.abs().idxmax()] if len(pairs) else None
    tracked = {}
    for feature in ("ap_width_mm", "sagittal_angle_deg"):
        rows = corr[corr.feature == feature]
        best = rows.loc[rows.r.abs().idxmax()]
        tracked[feature] = {"latent": best.latent, "r": float(best.r), "ci": list(pearson_ci(float(best.r), int(best.n))),
                            "p_fdr": float(best.p_fdr), "rho": float(best.rho), "n": int(best.n)}
    return {
        "bottleneck_interpreted": k,
        "convergence": convergence,
        "smallest_converged": converged[0] if converged else None,
        "latent_pairs_max_abs_r": None if worst is None else {"pair": [worst.latent, worst.feature], "r": float(worst.r),
                                                               "ci": list(pearson_ci(float(worst.r), int(worst.n))), "p_fdr": float(worst.p_fdr)},
        "tracked": tracked,
    }


def markdown(result: dict) -> str:
    def ci(c) -> str:
        return f"({c[0]:.3f} to {c[1]:.3f})"

    lines = ["| claim (paper) | paper | ours, 190 real discs (95 % CI) | holds? |", "|---|---|---|---|"]
    for b, c in sorted(result["convergence"].items(), reverse=True):
        paper = PAPER_EPOCHS.get(b)
        ours = f"{'converged at epoch ' + str(c['epochs']) if c['converged'] else 'not converged in ' + str(c['epochs']) + ' epochs'}, IoU {c['train_iou']:.4f} {ci(c['ci'])}"
        holds = "yes" if c["converged"] == (paper is not None) else "no"
        lines.append(f"| bottleneck {b} converges (IoU > 0.995) | {'epoch ' + str(paper) if paper else 'never'} | {ours} | {holds} |")
    smallest = result["smallest_converged"]
    lines.append(f"| 4 is the smallest bottleneck that converges | 4 | {smallest if smallest else 'none converged'} | {'yes' if smallest == 4 else 'no'} |")
    worst = result["latent_pairs_max_abs_r"]
    if worst:
        lines.append(f"| latents mutually uncorrelated | all \\|r\\| < 0.05 | largest \\|r\\|: {worst['pair'][0]} x {worst['pair'][1]} r = {worst['r']:.2f} {ci(worst['ci'])}, p_fdr {worst['p_fdr']:.2g} | {'yes' if abs(worst['r']) < 0.05 else 'no'} |")
    for feature, paper in (("ap_width_mm", PAPER["ap_width_mm"]), ("sagittal_angle_deg", PAPER["sagittal_angle_deg"])):
        t = result["tracked"][feature]
        lines.append(f"| one latent tracks {feature} | r = {paper:.2f} | {t['latent']}: r = {t['r']:.2f} {ci(t['ci'])}, rho {t['rho']:.2f}, p_fdr {t['p_fdr']:.2g} | {_as_strong(t, paper)} |")
    budget = f"; at most {result['max_minutes']:g} min of training per size" if result.get("max_minutes") else ""
    budget += f"; config {json.dumps(result['config'])}" if result.get("config") else ""
    lines.append(f"\nBottleneck interpreted: {result['bottleneck_interpreted']}; epochs at most {result['max_epochs'] or 'the CLI default'}{budget}; wall {result['wall_min']:.1f} min.")
    return "\n".join(lines) + "\n"


def _as_strong(tracked: dict, paper: float) -> str:
    """Whether our strongest latent tracks the feature as strongly as the paper's (|r| or its interval
    reaching |paper r|); a latent's sign is arbitrary (any latent can be negated), so only |r| counts."""
    strongest = max(abs(tracked["ci"][0]), abs(tracked["ci"][1]))
    return "yes" if strongest >= abs(paper) else f"weaker (|r| at most {strongest:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/replication"))
    parser.add_argument("--bottleneck", type=int, nargs="+", default=[64, 8, 4, 3])
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=None, help="training-time budget per bottleneck (default none)")
    parser.add_argument("--config", type=Path, default=None, help="a rayspine config file for train-ae (default: none, the CLI's defaults)")
    args = parser.parse_args()
    if not MASKS.is_dir():
        sys.exit(f"{MASKS} is absent: the replication needs ../shared/data/ribeirao_ivd_masks")
    result = run(args.work, args.bottleneck, args.max_epochs, args.max_minutes, args.config)
    print((args.work / "replication.md").read_text())
    print(json.dumps({"wall_min": result["wall_min"]}))


if __name__ == "__main__":
    main()
