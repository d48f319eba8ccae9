"""The streaming scoring graph: the only module that builds Ray Data pipelines.

    index -> load + prepare the network input (CPU task) -> segment (model actor pool, the network only)
          -> mask back on the scan's grid, measure, write mask/crops (CPU task)
          -> encode (model actor pool, optional) -> write the scan's table parts (CPU task)

Exactly-once, resumable output (``io.outputs``): a scan's rows are written as per-scan Parquet parts,
the ``scans`` part last, each atomically. A scan whose ``scans`` part exists is complete and is
skipped on a re-run; anything a killed run left half-written is simply written again. The
consolidated tables are rebuilt from the parts at the end, so they never hold a row twice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from ..config import Config
from ..io.archive import index_archive
from ..io.gradings import load_narrowing
from ..io.outputs import claim_output, done_keys, finish_tables, part_key, write_scan_parts
from ..io.store import refresh_root_group
from ..runtime import init_ray
from ..schema import ScanStatus
from . import stages

log = logging.getLogger(__name__)


def run_pipeline(
    archive: Path,
    out: Path,
    seg_dir: Path,
    ae_dir: Path | None = None,
    cfg: Config = Config(),
    overwrite: bool = False,
    labels: Path | None = None,
    segment_stage: type = stages.SegmentScans,
    report: bool = True,
) -> str:
    """Score every scan of ``archive`` into ``out``; returns a one-paragraph summary.

    ``segment_stage`` is the actor class of the segmentation step (tests put an oracle there).
    ``report=False`` leaves ``report.html`` to the caller (the demo writes one with its CV and
    interpretation figures at the end).
    """
    out = Path(out)
    index = index_archive(archive, use="images")
    if index.empty:
        raise FileNotFoundError(f"no scans found in {archive}")
    claim_output(out, "run", cfg, overwrite, archive=str(archive), seg=str(seg_dir), ae=str(ae_dir) if ae_dir else None)
    done = done_keys(out)
    index = index[~index.apply(lambda row: part_key(row.to_dict()) in done, axis=1)] if len(done) else index
    for row in index[index.status != ScanStatus.OK].to_dict("records"):
        failed = stages.failed_scan(row, row["status"], row["message"])
        write_scan_parts(out, {**failed, "path": row.get("image_path")}, [])
    todo = index[index.status == ScanStatus.OK]
    log.info("%d scans already complete, %d to score", len(done), len(todo))

    started = time.perf_counter()
    if len(todo):
        init_ray()  # no-op when the CLI (or a cluster job) already connected
        dataset = build_graph(todo, out, Path(seg_dir), Path(ae_dir) if ae_dir else None, cfg, segment_stage)
        for n, row in enumerate(dataset.iter_rows(), start=1):
            log.info("[%d/%d] %s: %s, %d discs", n, len(todo), row["scan_id"], row["status"], row["n_discs"])
    seconds = time.perf_counter() - started

    metadata = {"config_digest": cfg.digest(), "seg_model": str(seg_dir), "ae_model": str(ae_dir or "")}
    gradings = Path(labels) if labels else Path(archive) / "radiological_gradings.csv"
    scans, discs = finish_tables(out, stages.latent_dim(ae_dir), metadata, load_narrowing(gradings), cfg.discs.join_threshold())
    for store in ("masks.zarr", "crops.zarr"):
        refresh_root_group(out / store)  # the root groups list every scan written, this run's and earlier ones
    summary = summarise(scans, discs, seconds, out)
    if report:
        from ..report.html import write_report

        write_report(out)
    log.info(summary)
    return summary


def build_graph(todo: pd.DataFrame, out: Path, seg_dir: Path, ae_dir: Path | None, cfg: Config, segment_stage):
    """The Ray Data graph over the scans still to do (nothing runs until it is iterated)."""
    import ray

    from ..runtime import model_pools

    seg_card = segment_stage.card(seg_dir)
    rows = todo[["scan_id", "patient_id", "site", "image_path"]].to_dict("records")
    seg_plan, ae_plan = model_pools(cfg, with_encoder=ae_dir is not None)
    log.info("segmentation actors: %s; encoding actors: %s", seg_plan, ae_plan)
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    # Reading is I/O-bound: half a CPU each, which also keeps Ray from fusing it into the model actors.
    # Reads and measurements run a few at a time: each concurrent task is a worker process holding a
    # scan, and a pool that grows with the archive would make memory grow with it.
    tasks_at_once = max(2, seg_plan.size + 1)
    cpu_tasks = ray.data.TaskPoolStrategy(size=tasks_at_once)  # `concurrency=` is deprecated since Ray 2.51
    dataset = dataset.map(stages.load_scan, fn_kwargs={"cfg": cfg, "seg_card": seg_card}, num_cpus=0.5, compute=cpu_tasks)
    dataset = _model_pool(dataset, segment_stage, seg_dir, seg_plan, cfg.pipeline.batch_size)
    dataset = dataset.map(
        stages.measure_and_store, fn_kwargs={"out": str(out), "cfg": cfg, "seg_card": seg_card}, num_cpus=0.5, compute=cpu_tasks
    )
    if ae_plan is not None:
        dataset = _model_pool(dataset, stages.EncodeDiscs, ae_dir, ae_plan, cfg.pipeline.batch_size)
    return dataset.map(stages.write_parts_row, fn_kwargs={"out": str(out)}, num_cpus=0.25, compute=cpu_tasks)


def _model_pool(dataset, stage: type, model_dir: Path, plan, batch_size: int):
    """A model stage as an actor pool of ``plan.min_size`` to ``plan.max_size`` actors. Each asks for its
    GPU share, so an autoscaler launches GPU nodes for them; placement on chosen nodes goes through
    custom resources (``PoolPlan.resources``)."""
    return dataset.map_batches(
        stage,
        fn_constructor_kwargs={"model_dir": model_dir},
        batch_size=batch_size,
        batch_format="numpy",
        compute=plan.strategy(),
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus,
        resources=plan.resources or None,
    )


def summarise(scans: pd.DataFrame, discs: pd.DataFrame, seconds: float, out: Path) -> str:
    counts = scans["status"].value_counts().to_dict() if len(scans) else {}
    lines = [
        f"{len(scans)} scans ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}), "
        f"{len(discs)} discs, in {seconds:.1f} s",
        f"  tables : {out / 'scans.parquet'}, {out / 'discs.parquet'}",
        f"  masks  : {out / 'masks.zarr'}",
        f"  report : {out / 'report.html'}",
    ]
    bad = scans[scans["status"] != ScanStatus.OK] if len(scans) else scans
    for row in bad.head(10).itertuples():
        lines.append(f"  ! {row.scan_id}: {row.status}: {row.message}")
    return "\n".join(lines)
