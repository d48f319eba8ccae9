"""CPU time of every process of a local Ray through one scoring run (issue 16: where the pipeline's
CPU goes beside the stages' own work), and how many worker processes the run started.

Scores ``bench_pipeline.py``'s archive of N full-size synthetic scans with the given models, samples
the driver and all its descendants every 0.5 s (psutil), and prints CPU seconds per process name, the
task workers' CPU seconds one by one (a worker that only started and was killed shows as its imports,
about 2.4 CPU-s here) and the peak resident memory of them all.

    python bench/pipeline_processes.py --seg demo-out/segmenter --ae demo-out/autoencoder --n 128
"""

from __future__ import annotations

import collections
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil
from bench_pipeline import archive_of, run_options

from rayspine.config import Config
from rayspine.pipeline.graph import run_pipeline
from rayspine.runtime import init_ray

TASK_WORKER_NAMES = ("ray::IDLE", "ray::Map(", "ray::MapBatches(measure", "ray::ReadParquet", "ray::Write")


def main() -> None:
    args = run_options(n=128).parse_args()
    archive = archive_of(args.n, args.cache)
    init_ray()
    me = psutil.Process()
    cpu: dict[int, tuple[str, float]] = {}
    peak_rss = 0

    def sample() -> None:
        nonlocal peak_rss
        rss = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                times, name = p.cpu_times(), ("driver" if p.pid == me.pid else p.name())
                rss += p.memory_info().rss
                cpu[p.pid] = (name, times.user + times.system)
            except psutil.Error:  # a worker that ended between the listing and the read
                pass
        peak_rss = max(peak_rss, rss)

    sample()
    before = {pid: seconds for pid, (_, seconds) in cpu.items()}
    stop = threading.Event()

    def sample_until_stopped() -> None:
        while not stop.wait(0.5):
            sample()

    sampler = threading.Thread(target=sample_until_stopped, daemon=True)
    sampler.start()
    out = Path(tempfile.mkdtemp(prefix="processes-")) / "out"
    started = time.perf_counter()
    run_pipeline(archive, out, seg_dir=args.seg, ae_dir=args.ae, cfg=Config().replace(seg={"inference_precision": args.precision}), report=False)
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    sample()
    shutil.rmtree(out.parent)
    used = {pid: (name, seconds - before.get(pid, 0.0)) for pid, (name, seconds) in cpu.items()}
    by_name = collections.Counter()
    for name, seconds in used.values():
        by_name[name] += seconds
    workers = sorted(round(s, 1) for name, s in used.values() if name.startswith(TASK_WORKER_NAMES))
    print(f"run {wall:.1f} s, {sum(by_name.values()):.1f} CPU-s in all, peak resident memory {peak_rss / 2**30:.2f} GB")
    for name, seconds in by_name.most_common():
        print(f"{seconds:8.1f} CPU-s  {name}")
    print(f"{len(workers)} task worker processes, CPU-s each: {workers}")


if __name__ == "__main__":
    main()
