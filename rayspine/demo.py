"""``rayspine demo``: the paper's five steps end to end on a synthetic multi-site archive.

Each step writes into its own folder under OUT and is skipped when a previous demo already finished
it, so an interrupted demo resumes. The settings are the paper's except the training lengths, which
are cut to fit about ten minutes on a 2-core laptop (``DEMO_OVERRIDES``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .config import Config

log = logging.getLogger(__name__)

# Shorter training than the paper so the whole demo runs on a laptop; everything else is the default.
# The budgets are epochs, not minutes: a time budget made the figures depend on the machine and its load
# (a fresh clone stopped the segmenter one epoch earlier than the working tree and printed another Dice).
DEMO_OVERRIDES = {
    "seg": {"max_epochs": 10, "patience": 5, "max_minutes": 0.0},
    "ae": {"bottlenecks": (64, 8, 4, 3), "max_epochs": 7, "max_minutes": 0.0},
    "cv": {"n_bootstrap": 300},
}


def _step(name: str, done: bool, started: float) -> bool:
    if done:
        log.info("demo: %s already done, skipped", name)
    else:
        log.info("demo: %s (%.0f s so far)", name, time.perf_counter() - started)
    return not done


def run_demo(out: Path, patients: int = 24, overwrite: bool = False, cfg: Config | None = None) -> dict[str, Path]:
    import shutil

    import pandas as pd

    from .autoencode.latent import add_latent
    from .autoencode.sweep import run_sweep
    from .interpret.command import run_interpret
    from .measure.command import run_measure
    from .pipeline.graph import run_pipeline
    from .predict.command import run_cv
    from .report.html import write_report
    from .segment.command import train_segmenter
    from .synth import synthesize_archive

    out = Path(out)
    if overwrite and out.exists():
        shutil.rmtree(out)
    cfg = cfg or Config().replace(**DEMO_OVERRIDES)
    paths = {name: out / name for name in ("archive", "segmenter", "ground_truth", "autoencoder", "scored", "cv_ground_truth", "cv_predicted", "interpret")}
    started = time.perf_counter()

    if _step("1/8 synthesise the archive", (paths["archive"] / "truth.parquet").exists(), started):
        synthesize_archive(paths["archive"], patients=patients, sites=3, seed=0, overwrite=True)
    sites = sorted(pd.read_parquet(paths["archive"] / "truth.parquet")["site"].unique())

    if _step("2/8 train the segmenter, last site held out", (paths["segmenter"] / "metrics.json").exists(), started):
        train_segmenter(paths["archive"], paths["segmenter"], cfg, test_site=sites[-1], overwrite=True)

    if _step("3/8 measure the ground-truth masks", (paths["ground_truth"] / "discs.parquet").exists(), started):
        run_measure(paths["archive"], paths["ground_truth"], cfg)

    if _step("4/8 autoencoder bottleneck sweep", (paths["autoencoder"] / "sweep.csv").exists(), started):
        run_sweep([paths["ground_truth"]], paths["autoencoder"], cfg, overwrite=True)
        add_latent(paths["ground_truth"], paths["autoencoder"])

    if _step("5/8 score the archive (segment, measure, encode)", (paths["scored"] / "scans.parquet").exists(), started):
        run_pipeline(
            paths["archive"], paths["scored"], seg_dir=paths["segmenter"], ae_dir=paths["autoencoder"], cfg=cfg, report=False
        )  # step 8 writes the report, with the CV and interpretation figures

    if _step("6/8 cross-validate from ground-truth and predicted masks", (paths["cv_predicted"] / "cv.csv").exists(), started):
        run_cv(paths["ground_truth"] / "discs.parquet", paths["cv_ground_truth"], cfg)
        run_cv(paths["scored"] / "discs.parquet", paths["cv_predicted"], cfg)

    if _step("7/8 interpret the latent features", (paths["interpret"] / "correlation.csv").exists(), started):
        run_interpret(paths["autoencoder"], paths["ground_truth"] / "discs.parquet", paths["interpret"], cfg)

    _step("8/8 report", False, started)
    report = write_report(
        paths["scored"],
        extras={
            "Disc narrowing, features from ground-truth masks": paths["cv_ground_truth"],
            "Disc narrowing, features from predicted masks": paths["cv_predicted"],
            "What the latent features encode": paths["interpret"],
        },
    )
    seconds = time.perf_counter() - started
    print(f"\nrayspine demo finished in {seconds / 60:.1f} min. Everything is under {out}:")
    for name, path in {**paths, "report": report}.items():
        print(f"  {name:<16} {path}")
    return {**paths, "report": report}
