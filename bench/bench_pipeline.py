"""The streaming pipeline against the same stage functions in a plain loop, and its memory as N grows.

    python bench/bench_pipeline.py --seg MODEL_DIR [--ae AE_DIR] --n 32 [--mode loop|pipeline|both]

Times exclude Ray's start-up, which is reported apart. Peak memory is the largest sum of the resident
memory of this process and all its descendants (a local Ray's raylet, GCS, workers, actors), sampled
every 0.2 s. Results: bench/pipeline.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil

from rayspine.pipeline import stages
from rayspine.config import Config
from rayspine.io.archive import index_archive
from rayspine.io.outputs import write_block_parts
from rayspine.synth import synthesize_archive


class PeakMemory:
    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class FirstPart:
    """Seconds from ``started`` until the run's first ``scans`` part appears (its first scan's rows)."""

    def __init__(self, out: Path, started: float):
        self.seconds = None
        self._stop = threading.Event()

        def poll():
            while self.seconds is None and not self._stop.wait(0.1):
                if any((out / "parts" / "scans").glob("*.parquet")):
                    self.seconds = time.perf_counter() - started

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.seconds


def archive_of(n: int, cache: Path) -> Path:
    root = cache / f"archive-{n}"
    if not (root / "truth.parquet").exists():
        synthesize_archive(root, patients=n, sites=3, seed=11, overwrite=True)
    return root


def run_options(n: int) -> argparse.ArgumentParser:
    """The options of the scripts that time runs of the graph: the models, N and the archives' cache."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seg", type=Path, required=True)
    parser.add_argument("--ae", type=Path)
    parser.add_argument("--n", type=int, default=n)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "rayspine-bench")
    parser.add_argument("--precision", default=Config().seg.inference_precision, help="seg.inference_precision (auto, float32, bfloat16)")
    return parser


def run_loop(archive: Path, out: Path, seg: Path, ae: Path | None, cfg: Config) -> tuple[float, float]:
    """The same stage functions, one scan after another, in this process: (wall s, CPU s of all threads)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    segment = stages.SegmentScans(seg, precision=cfg.seg.inference_precision)
    encode = stages.EncodeDiscs(ae) if ae else None
    card = stages.SegmentScans.card(seg)
    for row in index_archive(archive)[["scan_id", "patient_id", "site", "image_path"]].to_dict("records"):
        row = stages.load_scan(row, cfg, card)
        batch = segment({k: _column(v) for k, v in row.items()})
        row = {k: v[0] for k, v in batch.items()}
        batch = stages.measure_and_store(batch, str(out), cfg, card, attempt=0, keep_crops=encode is not None)
        row = {k: v[0] for k, v in batch.items()}
        if encode:
            batch = encode({k: _column(v) for k, v in row.items()})
            row = {k: v[0] for k, v in batch.items()}
        write_block_parts(out, [stages.table_values(row)], attempt=0)
    return time.perf_counter() - started, time.process_time() - cpu_started


def _column(value):
    import numpy as np

    holder = np.empty(1, dtype=object)
    holder[0] = value
    return holder


def main() -> None:
    parser = run_options(n=32)
    parser.add_argument("--mode", choices=["loop", "pipeline", "both"], default="both")
    args = parser.parse_args()
    cfg = Config().replace(seg={"inference_precision": args.precision})
    archive = archive_of(args.n, args.cache)
    result = {"n": args.n, "cpus": psutil.cpu_count(), "precision": args.precision}
    if args.mode in ("loop", "both"):
        out = Path(tempfile.mkdtemp(prefix="loop-"))
        with PeakMemory() as memory:
            result["loop_s"], result["loop_cpu_s"] = run_loop(archive, out, args.seg, args.ae, cfg)
        result["loop_peak_mb"] = memory.peak / 2**20
        # Cores the loop keeps busy on average; no schedule can beat the loop by more than
        # (cores available) / (cores busy), whatever it overlaps.
        result["loop_busy_cores"] = result["loop_cpu_s"] / result["loop_s"]
        result["speedup_ceiling"] = psutil.cpu_count() / result["loop_busy_cores"]
        shutil.rmtree(out)
    if args.mode in ("pipeline", "both"):
        from rayspine.pipeline.graph import run_pipeline
        from rayspine.report.html import write_report
        from rayspine.runtime import init_ray

        out = Path(tempfile.mkdtemp(prefix="pipeline-")) / "out"
        with PeakMemory() as memory:
            started = time.perf_counter()
            init_ray()
            result["ray_start_s"] = time.perf_counter() - started
            started = time.perf_counter()
            first = FirstPart(out, started)
            run_pipeline(archive, out, seg_dir=args.seg, ae_dir=args.ae, cfg=cfg, report=False)
            result["pipeline_s"] = time.perf_counter() - started
            result["first_result_s"] = first.stop()
            started = time.perf_counter()
            write_report(out)  # the loop writes no report: timed apart
            result["report_s"] = time.perf_counter() - started
        result["pipeline_peak_mb"] = memory.peak / 2**20
        shutil.rmtree(out.parent)
    if "loop_s" in result and "pipeline_s" in result:
        result["speedup"] = result["loop_s"] / result["pipeline_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
