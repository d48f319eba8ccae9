"""The ``rayspine`` command line.

Heavy modules (torch, ray, monai) are imported inside each command so that ``rayspine --help``
answers at once. Each command is a thin shell over one function of the package.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    help="Disc masks, geometry and latent shape features from lumbar-spine MRI archives "
    "(Perrone et al., Ann Biomed Eng 2025), on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = typer.Option(None, "--config", help="JSON file of config overrides, e.g. {\"ae\": {\"max_epochs\": 50}}")
OverwriteOption = typer.Option(False, "--overwrite", help="Start afresh instead of resuming into OUT.")
RetryFailedOption = typer.Option(False, "--retry-failed", help="On a resume, score again the scans a previous run failed (status error, unreadable, ...).")


def _config(path: Optional[Path], **sections):
    from .config import Config

    data = json.loads(path.read_text()) if path else {}
    for name, values in sections.items():
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            data.setdefault(name, {}).update(values)
    return Config.from_dict(data)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder for the SPIDER-layout demo archive."),
    patients: int = typer.Option(24, help="Number of patients (one scan each)."),
    sites: int = typer.Option(3, help="Number of institutions, each with its own scanner settings."),
    seed: int = typer.Option(0, help="Same seed, byte-identical archive."),
    size: str = typer.Option("full", help="'full' (SPIDER-like field of view) or 'small' (tiny volumes for tests)."),
    overwrite: bool = OverwriteOption,
) -> None:
    """Synthesise a multi-site SPIDER-layout archive with ground truth (truth.parquet)."""
    from .synth import synthesize_archive

    truth = synthesize_archive(out, patients=patients, sites=sites, seed=seed, size=size, overwrite=overwrite)
    typer.echo(f"wrote {truth['scan_id'].nunique()} scans, {len(truth)} discs, {truth['site'].nunique()} sites to {out}")


@app.command("train-seg")
def train_seg(
    archive: Path = typer.Argument(..., help="Archive with images/ and masks/ (SPIDER layout)."),
    out: Path = typer.Option(..., "-o", "--out", help="Model folder."),
    network: Optional[str] = typer.Option(None, help="swinunetr | segresnet | unet (default: swinunetr on GPU, unet on CPU)."),
    test_site: Optional[str] = typer.Option(None, help="Hold this institution out as the test set (as the paper did)."),
    max_epochs: Optional[int] = typer.Option(None, help="Epoch limit (default 200)."),
    init_from: Optional[Path] = typer.Option(None, help="Start from this segmenter's weights (fine-tune a model trained on another archive)."),
    config: Optional[Path] = ConfigOption,
    overwrite: bool = OverwriteOption,
) -> None:
    """Train the disc segmenter with Ray Train; writes weights, model.json and metrics.json."""
    from .segment.command import train_segmenter

    cfg = _config(config, seg={"network": network, "max_epochs": max_epochs, "init_from": str(init_from) if init_from else None})
    metrics = train_segmenter(archive, out, cfg, test_site=test_site, overwrite=overwrite)
    typer.echo(json.dumps(metrics, indent=2, default=str))


SCHEME_HELP = (
    "Label scheme of the masks: spider, spineps (seg-vert), totalspineseg (step2_output, weights 2024-09 or later), "
    "totalspineseg-legacy (older weights), instances (one label per disc, counted from the bottom), binary, or auto. "
    "Default: SPIDER labels, or binary for 0/1 masks. A mask that does not fit is reported with the scheme that would."
)


@app.command()
def index(
    archive: Path = typer.Argument(..., help="SPIDER, BIDS (with SPINEPS derivatives), TotalSpineSeg output or plain folder."),
    masks: bool = typer.Option(False, "--masks", help="Index the masks alone, as `measure` does."),
) -> None:
    """Say what an archive holds (layout, scans, masks, patients, sites, series, statuses) before anything runs."""
    from .io.archive import archive_layout, describe_index, index_archive

    table = index_archive(archive, use="masks" if masks else "images")
    typer.echo(describe_index(table, archive_layout(archive)))


@app.command()
def measure(
    masks: Path = typer.Argument(..., help="An archive (see `rayspine index`): its masks are measured."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: discs.parquet, scans.parquet, crops.zarr."),
    labels: Optional[str] = typer.Option(None, "--labels", help=SCHEME_HELP),
    gradings: Optional[Path] = typer.Option(None, "--gradings", help="Gradings CSV (default: the archive's radiological_gradings.csv)."),
    config: Optional[Path] = ConfigOption,
    overwrite: bool = OverwriteOption,
    retry_failed: bool = RetryFailedOption,
) -> None:
    """Disc instances, 64^3 crops and geometry from existing masks (e.g. ground truth, SPINEPS, TotalSpineSeg), on Ray."""
    from .measure.command import run_measure

    if labels is not None and (labels.lower().endswith(".csv") or Path(labels).is_file()):
        logging.getLogger(__name__).warning("--labels %s: a gradings CSV; give it as --gradings (--labels names the label scheme)", labels)
        gradings, labels = gradings or Path(labels), None
    cfg = _config(config)
    discs = run_measure(masks, out, cfg, labels=gradings, overwrite=overwrite, scheme=labels, retry_failed=retry_failed)
    typer.echo(f"{len(discs)} discs measured -> {out / 'discs.parquet'}")


@app.command()
def export(
    out: Path = typer.Argument(..., help="Output folder of `rayspine run` (its masks.zarr)."),
    fmt: str = typer.Option("nifti", "--format", help="nifti (.nii.gz), nrrd or mha."),
    dest: Optional[Path] = typer.Option(None, "-o", "--out", help="Folder for the files (default OUT/masks-<format>)."),
) -> None:
    """Each scan's disc mask on its scan's own grid, with SPIDER's label table for ITK-SNAP and 3D Slicer."""
    from .io.export import ITKSNAP_LABELS, SLICER_COLORS, export_masks

    written = export_masks(out, fmt, dest)
    folder = written[0].parent if written else (dest or out / f"masks-{fmt}")
    typer.echo(f"{len(written)} masks -> {folder} (label tables: {ITKSNAP_LABELS}, {SLICER_COLORS})")


@app.command("train-ae")
def train_ae(
    crops: List[Path] = typer.Argument(..., help="Output folders of `measure` or `run` (their crops.zarr)."),
    out: Path = typer.Option(..., "-o", "--out", help="Sweep folder: sweep.csv and bn<k>/ models."),
    bottleneck: Optional[List[int]] = typer.Option(None, "--bottleneck", "-b", help="Sizes to sweep (default 64 8 4 3)."),
    max_epochs: Optional[int] = typer.Option(None, help="Epoch limit per trial (default 60; 1000 with --paper-recipe)."),
    max_minutes: Optional[float] = typer.Option(None, help="Training-time budget per trial, in minutes (default none): a trial that spends it stops, not converged."),
    heldout: Optional[float] = typer.Option(None, help="Fraction of discs held out to report unseen-disc IoU."),
    model: Optional[str] = typer.Option(None, "--model", help="Registered autoencoder network (default conv; see rayspine/autoencode/networks/)."),
    paper_recipe: bool = typer.Option(False, "--paper-recipe", help="Train as the paper did: constant learning rate, no augmentation, until the eval-mode training IoU passes 0.995 (up to 1000 epochs). The default recipe reconstructs unseen people better."),
    heldout_folds: int = typer.Option(0, "--heldout-folds", help="Instead of the sweep: K folds by patient, each disc reconstructed by a model that never saw its patient, beside PCA, nearest disc and mean shape."),
    config: Optional[Path] = ConfigOption,
    overwrite: bool = OverwriteOption,
) -> None:
    """Train the disc autoencoder, one Ray Tune trial per bottleneck size, in parallel (or score it on unseen people)."""
    from .autoencode.sweep import run_sweep

    # `--bottleneck 64 8 4 3` (the paper's way of writing it): the click parser gives the option only its
    # first value and appends the rest to CROPS, so plain integers that name no folder move back.
    stray = [c for c in crops if str(c).isdigit() and not c.exists()]
    if stray and bottleneck:
        crops = [c for c in crops if c not in stray]
        bottleneck = [*bottleneck, *(int(str(c)) for c in stray)]
    if not crops:
        raise typer.BadParameter("give at least one folder of crops (an output of `measure` or `run`)")
    from .config import ae_overrides

    cfg = _config(config, ae=ae_overrides(paper_recipe, bottlenecks=tuple(bottleneck) if bottleneck else None, max_epochs=max_epochs,
                                          max_minutes=max_minutes, heldout_fraction=heldout, model=model))
    if heldout_folds:
        from .autoencode.heldout import run_heldout

        table = run_heldout(crops, out, cfg, folds=heldout_folds)
    else:
        table = run_sweep(crops, out, cfg, overwrite=overwrite)
    typer.echo(table.to_string(index=False))


@app.command()
def run(
    archive: Path = typer.Argument(..., help="Archive to score (SPIDER layout or a folder of scans)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder; a re-run resumes."),
    seg: Path = typer.Option(..., "--seg", help="Segmenter model folder (from train-seg)."),
    ae: Optional[Path] = typer.Option(None, "--ae", help="Autoencoder sweep or model folder (from train-ae)."),
    config: Optional[Path] = ConfigOption,
    overwrite: bool = OverwriteOption,
    retry_failed: bool = RetryFailedOption,
) -> None:
    """Score an archive as one streaming Ray Data graph: masks, geometry, latent features, report."""
    from .pipeline.graph import run_pipeline

    cfg = _config(config)
    summary = run_pipeline(archive, out, seg_dir=seg, ae_dir=ae, cfg=cfg, overwrite=overwrite, retry_failed=retry_failed)
    typer.echo(summary)


@app.command()
def cv(
    features: Path = typer.Argument(..., help="discs.parquet (from measure or run)."),
    labels: Optional[Path] = typer.Option(None, help="Gradings CSV; optional when FEATURES has disc_narrowing."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for cv.csv, cv.md, roc.png."),
    leaky_folds: bool = typer.Option(False, help="The paper's protocol: let one patient's discs span folds."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Cross-validate XGBoost disc-narrowing prediction on latent, geometric and both feature sets."""
    from .predict.command import run_cv

    cfg = _config(config, cv={"group_by_patient": False if leaky_folds else None})
    table = run_cv(features, out, cfg, labels=labels)
    typer.echo(table.to_string(index=False))


@app.command()
def interpret(
    ae: Path = typer.Option(..., "--ae", help="Autoencoder sweep or model folder."),
    features: Path = typer.Option(..., "--features", help="discs.parquet with latent columns."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for traversal and correlation outputs."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Latent traversal (decoded and measured) and latent-geometry correlations."""
    from .interpret.command import run_interpret

    cfg = _config(config)
    paths = run_interpret(ae, features, out, cfg)
    typer.echo("\n".join(str(p) for p in paths))


@app.command()
def report(
    out: Path = typer.Argument(..., help="Output folder of `run` or `measure` (its scans.parquet and discs.parquet)."),
) -> None:
    """(Re-)write OUT/report.html: warnings, flagged discs, geometry by level and site, QC pictures in OUT/qc/."""
    from .report.html import write_report

    typer.echo(write_report(out))


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), "-o", "--out", help="Folder for everything the demo makes."),
    patients: int = typer.Option(24, help="Patients in the synthetic archive."),
    overwrite: bool = OverwriteOption,
) -> None:
    """The whole paper on a synthetic multi-site archive, end to end, on a local Ray."""
    from .demo import run_demo

    run_demo(out, patients=patients, overwrite=overwrite)


def main() -> None:
    """Console entry point: user errors (missing or occupied folders, bad settings or files) end with one
    clear line and exit status 2; anything else is a bug or an infrastructure failure and stays loud."""
    from .errors import USER_ERRORS

    try:
        app()
    except USER_ERRORS as err:
        typer.secho(f"rayspine: error: {err}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
