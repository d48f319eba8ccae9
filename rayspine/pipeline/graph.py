"""The streaming scoring graph: the only module that builds Ray Data pipelines.

    index (Parquet, blocks of scans) -> load + prepare the network input (CPU task)
          -> segment (model actor pool, the network only)
          -> mask back on the scan's grid, measure, write masks and the block's crops (CPU task)
          -> encode (model actor pool, optional) -> the table rows, one part per block (a Datasink)

The driver holds neither the scans nor a block per scan: the scans still to do are written once as
Parquet (``io.outputs.write_index``) and read back by Ray Data in blocks of up to
``PipelineConfig.block_scans`` scans, after a few small blocks that bring the first rows out early.

Exactly-once, resumable output (``io.outputs``): each block's rows are written as a ``discs`` then a
``scans`` part, each atomically. A scan with a ``scans`` row is complete and skipped on a re-run
(failed ones too, unless ``retry_failed``); what a killed run left half-written never counts. The
consolidated tables are rebuilt from the parts at the end, one row per scan.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ..config import Config
from ..io.archive import index_archive
from ..io.gradings import load_narrowing
from ..io.outputs import claim_output, done_keys, finish_tables, new_attempt, part_key, scan_statuses, write_block_parts, write_index
from ..io.store import completed_parts, refresh_root_group
from ..runtime import free_cpus_on_one_node, init_ray, scans_per_block
from ..schema import ScanStatus
from . import stages
from .progress import Progress

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
    retry_failed: bool = False,
    fail_at: dict[str, str] | None = None,
) -> str:
    """Score every scan of ``archive`` into ``out``; returns a one-paragraph summary.

    ``segment_stage`` is the actor class of the segmentation step (tests put an oracle there).
    ``report=False`` leaves ``report.html`` to the caller (the demo writes one with its CV and
    interpretation figures at the end). ``retry_failed`` scores again the scans a previous run
    failed; ``fail_at`` ({stage: scan_id}) raises on purpose in that stage, for the fault tests.
    """
    from ..segment.infer import check_precision

    check_precision(cfg.seg.inference_precision)  # a wrong name stops the run here, not in each actor
    out = Path(out)
    if ae_dir is not None:  # crops as the autoencoder learnt them, whatever the config says
        from ..autoencode.infer import read_autoencoder_card, with_crop_frame_of

        cfg = with_crop_frame_of(cfg, read_autoencoder_card(Path(ae_dir)))
    index = index_archive(archive, use="images")
    if index.empty:
        raise FileNotFoundError(f"no scans found in {archive}")
    claim_output(out, "run", cfg, overwrite, archive=str(archive), seg=str(seg_dir), ae=str(ae_dir) if ae_dir else None)
    attempt = new_attempt()
    done = done_keys(out, retry_failed)
    records = [row for row in index.to_dict("records") if part_key(row) not in done]
    del index
    failed = [{**row, "path": row.get("image_path"), "n_discs": 0} for row in records if row["status"] != ScanStatus.OK]
    if failed:  # unusable ids need no task: one part for all of them
        write_block_parts(out, failed, attempt)
    todo = [row for row in records if row["status"] == ScanStatus.OK]
    del records
    log.info("%d scans already complete, %d to score", len(done), len(todo))

    started = time.perf_counter()
    if todo:
        init_ray()  # no-op when the CLI (or a cluster job) already connected
        folder = write_index(out, todo, block_scans=scans_per_block(len(todo), cfg.pipeline.block_scans))
        total = len(todo)
        del todo
        dataset = build_graph(folder, out, Path(seg_dir), Path(ae_dir) if ae_dir else None, cfg, segment_stage, attempt, fail_at)
        # Ray Data warns that the job "will hang" when Ray's resource view shows no free CPU as it starts,
        # and for 50-100 ms after work ends (here the index files' metadata tasks that build_graph ran)
        # the view still counts its CPUs: a warning about nothing, unless we wait for them to come back
        # (at most 3 s where none will, e.g. a cluster that has still to launch its CPU nodes).
        free_cpus_on_one_node(wait_s=3.0)
        with watch_parts(out, attempt, total):
            # Without an encoder the write asks for what the measure task asks for, so Ray fuses the two
            # (with Ray's default whole CPU it waited until every load and measure task had finished: no
            # row came out before the end). After the encoder's actors it is a task of its own and asks
            # for no CPU: its rows are small, and with a quarter CPU Ray Data's budget gave it none while
            # load and measure tasks ran, so on 2 CPUs the first of 128 full-size scans came out after
            # 65-76 s instead of 30-31 s, all the early ones at once (bench/pipeline.md, session 8).
            write_args = cpu_task_args(cfg) if ae_dir is None else {"num_cpus": 0}
            dataset.write_datasink(stages.parts_sink(str(out), attempt, fail_at), ray_remote_args=write_args)
        shutil.rmtree(folder)  # this run's work list, done: the parts say what is complete
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


def build_graph(index: Path, out: Path, seg_dir: Path, ae_dir: Path | None, cfg: Config, segment_stage, attempt: int, fail_at: dict | None = None):
    """The Ray Data graph over the scans in the ``index`` folder (nothing runs until it is written)."""
    import ray

    from ..runtime import model_pools

    seg_card = segment_stage.card(seg_dir)
    seg_plan, ae_plan = model_pools(cfg, with_encoder=ae_dir is not None)
    log.info("segmentation actors: %s; encoding actors: %s", seg_plan, ae_plan)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the run's own progress line instead of one bar per operator
    # One block per index file: a block is the index's few hundred scans (a few small ones first), never
    # one scan. Ray 2.60's DataSource V2 reader bundles small files up to 128 MB into one block (here: the
    # whole archive in one task), so the index is read by the V1 reader, which keeps a block per file.
    context.use_datasource_v2 = False
    # Reading an index file costs next to nothing, so it asks for no CPU, two at a time. Ray's default
    # whole CPU, beside the two actor pools of an encoding run on 2 CPUs, could never be scheduled (the
    # graph hung). Any CPU here is reserved first (Ray Data reserves for operators upstream first): with a
    # quarter CPU the measure+write step got none on 2 CPUs, and the first rows of 10,000 scans came out
    # after 34-64 s. No CPU and no cap started a worker per index file at once (34 s); two at a time,
    # 14 s, as for 500 scans (bench/scale.md).
    dataset = ray.data.read_parquet(str(index), override_num_blocks=len(list(index.glob("*.parquet"))), num_cpus=0, concurrency=2)
    # CPU tasks scale with the cluster, bounded by the memory one holds (a scan and its network input),
    # not by the number of model actors. Half a CPU each also keeps Ray from fusing them into the actors.
    cpu_tasks = ray.data.TaskPoolStrategy(size=None)
    dataset = dataset.map(stages.load_scan, fn_kwargs={"cfg": cfg, "seg_card": seg_card, "fail_at": fail_at}, compute=cpu_tasks, **cpu_task_args(cfg))
    dataset = _model_pool(dataset, _with_faults(segment_stage, fail_at), seg_dir, seg_plan, cfg.pipeline.batch_size,
                          precision=cfg.seg.inference_precision)
    measure_kwargs = {"out": str(out), "cfg": cfg, "seg_card": seg_card, "attempt": attempt, "keep_crops": ae_plan is not None, "fail_at": fail_at}
    # A whole block per call (batch_size None): its crops are written as one Zarr group, not one per scan.
    dataset = dataset.map_batches(stages.measure_and_store, fn_kwargs=measure_kwargs, batch_size=None, batch_format="numpy", compute=cpu_tasks, **cpu_task_args(cfg))
    if ae_plan is not None:
        dataset = _model_pool(dataset, _with_faults(stages.EncodeDiscs, fail_at), ae_dir, ae_plan, cfg.pipeline.batch_size)
    return dataset


def _model_pool(dataset, stage: type, model_dir: Path, plan, batch_size: int, **options):
    """A model stage as an actor pool of ``plan.min_size`` to ``plan.max_size`` actors, each constructed
    as ``stage(model_dir, **options)``. Each asks for its GPU share, so an autoscaler launches GPU nodes
    for them; placement on chosen nodes goes through custom resources (``PoolPlan.resources``)."""
    return dataset.map_batches(
        stage,
        fn_constructor_kwargs={"model_dir": model_dir, **options},
        batch_size=batch_size,
        batch_format="numpy",
        compute=plan.strategy(),
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus,
        resources=plan.resources or None,
    )


def cpu_task_args(cfg: Config) -> dict:
    """What one CPU task (load, measure, write) holds: half a CPU, and the memory of a scan in flight."""
    return {"num_cpus": 0.5, "memory": cfg.pipeline.task_memory_mb * 2**20}


def _with_faults(stage: type, fail_at: dict | None) -> type:
    """A model actor class that raises for the scans of ``fail_at`` when a test asks for it."""
    if not fail_at:
        return stage
    return type(f"Faulty{stage.__name__}", (stage,), {"fail_at": dict(fail_at)})


@contextmanager
def watch_parts(out: Path, attempt: int, total: int, every_s: float = 1.0):
    """The progress line, from the ``scans`` parts this run writes (the driver polls one folder)."""
    progress = Progress(total)
    stop = threading.Event()
    seen: set[str] = set()

    def poll() -> None:
        for path in completed_parts(out, "scans"):
            if path.name.startswith(f"{attempt}-") and path.name not in seen:
                seen.add(path.name)
                for scan_id, status in scan_statuses(path):
                    progress.add(scan_id, status)
        progress.show()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                poll()
            except OSError:  # a part renamed or an output folder on a flaky share: next time
                pass

    thread = threading.Thread(target=loop, name="rayspine-progress", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join()
        poll()
        progress.close()


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
