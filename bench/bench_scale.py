"""Scale benchmark (issue 16): the real scoring graph on N tiny synthetic scans with the oracle segmenter.

Measures, per N: driver peak RSS, files written (Parquet, Zarr), time to the first scan's rows, wall time
per scan at steady state, the stages' own CPU time, consolidation time; then projects 10^5 and 10^6
scans on the cluster of ``cluster.yaml``. Not part of the test suite (minutes, not seconds).

    python bench/bench_scale.py --n 500 2000 [--work /tmp/scale] [--cpus 2]
    python bench/bench_scale.py --kill-resume 300       # SIGKILL half-way, resume, compare with a clean run

An archive of N scans is hard links to a few synthesized ``tiny`` scans under N ids, so making it is
cheap; each N is scored by a fresh driver process (its peak RSS is the driver's alone).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_SCANS = 16


def make_archive(work: Path, n: int) -> Path:
    from rayspine.synth import synthesize_archive

    base = work / "base"
    if not (base / "truth.parquet").exists():
        synthesize_archive(base, patients=BASE_SCANS, sites=2, seed=7, size="tiny", overwrite=True)
    archive = work / f"archive-{n}"
    if (archive / "images" / f"{n}_t1.mha").exists():
        return archive
    for sub in ("images", "masks"):
        (archive / sub).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            target = archive / sub / f"{i}_t1.mha"
            if not target.exists():
                os.link(base / sub / f"{(i - 1) % BASE_SCANS + 1}_t1.mha", target)
    return archive


def score(archive: Path, out: Path, cpus: int) -> dict:
    """One driver process: start Ray, run the graph; JSON back.

    A thread in the driver polls ``parts/scans`` (as the progress line does) to time each part's rows and
    count the Parquet files at their peak; ``finish_tables`` (consolidation and compaction) is timed where
    ``run_pipeline`` calls it. ``out`` is removed first: the poller starts before ``run_pipeline`` clears
    an old output, and an earlier run's compacted part, seen at once, read as a first result in about a
    second (sessions 5 and 6 reported 1.2-1.4 s at N = 500 that way).
    """
    shutil.rmtree(out, ignore_errors=True)
    code = f"""
import json, resource, sys, threading, time
sys.path.insert(0, {str(ROOT)!r})
started = time.time()
from rayspine.runtime import init_ray
init_ray(num_cpus={cpus})
ray_up = time.time()
import pyarrow.parquet as pq
from pathlib import Path
import rayspine.pipeline.graph as graph
from tests import oracle
out = Path({str(out)!r})
seen, peak, stop = {{}}, [0], threading.Event()
def poll():
    while not stop.wait(0.2):
        try:
            files = sorted((out / "parts").rglob("*.parquet"))
            peak[0] = max(peak[0], len(files))
            for p in files:
                if p.parent.name == "scans" and p.name not in seen:
                    seen[p.name] = (time.time(), pq.read_metadata(p).num_rows)
        except OSError:
            pass
watcher = threading.Thread(target=poll, daemon=True); watcher.start()
timed = {{}}
finish = graph.finish_tables
def finish_timed(*args, **kwargs):
    stop.set(); watcher.join()
    t = time.perf_counter(); result = finish(*args, **kwargs); timed["consolidation_s"] = time.perf_counter() - t
    return result
graph.finish_tables = finish_timed
graph.run_pipeline({str(archive)!r}, str(out), seg_dir={str(archive)!r}, segment_stage=oracle.OracleSegmentScans, report=False, overwrite=True)
done = time.time()
rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps(dict(started=started, ray_up=ray_up, done=done, rss_mb=rss_kb / 1024, parts=sorted(seen.values()),
                                  peak_parquet_parts=peak[0], **timed)))
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(proc.stderr[-4000:])
    return json.loads(lines[-1][len("RESULT ") :])


def measure_outputs(out: Path, timing: dict) -> dict:
    import pandas as pd

    scans = pd.read_parquet(out / "scans.parquet")
    written = timing["parts"]  # (seen at, rows) of each scans part, in time order
    first = written[0][0] - timing["ray_up"]
    # Steady state: from the part that completes the first 10 % of the scans to the last part.
    total, cum, t10, n10 = len(scans), 0, None, 0
    for seen_at, rows in written:
        cum += rows
        if t10 is None and cum >= 0.1 * total:
            t10, n10 = seen_at, cum
    steady = (written[-1][0] - t10) / max(1, total - n10)
    files = [p for p in out.rglob("*") if p.is_file()]
    parquet = sum(p.suffix == ".parquet" for p in files)
    zarr = sum(".zarr" in p.parts[len(out.parts)] for p in files)
    stage_cpu = float(scans[["seconds_load", "seconds_segment", "seconds_measure"]].fillna(0).sum(axis=1).mean())
    run = timing["done"] - timing["ray_up"]
    return {
        "n": total,
        "ok": int((scans.status == "ok").sum()),
        "ray_start_s": timing["ray_up"] - timing["started"],
        "run_s": run,
        "first_result_s": first,
        "steady_s_per_scan": steady,
        "stage_cpu_s_per_scan": stage_cpu,
        "rss_mb": timing["rss_mb"],
        "parquet_files": parquet,  # at the end: the two tables and one compacted part per table
        "parquet_per_1000": 1000 * parquet / total,
        "peak_parquet_parts": timing["peak_parquet_parts"],  # during the run, before compaction
        "peak_parquet_per_1000": 1000 * timing["peak_parquet_parts"] / total,
        "zarr_files_per_scan": zarr / total,
        "consolidation_s": timing["consolidation_s"],
        "consolidation_share": timing["consolidation_s"] / run,
    }


def kill_and_resume(work: Path, n: int, cpus: int) -> dict:
    """Score N scans cleanly; score them again, SIGKILL the driver and its Ray once about half the scans
    have rows, resume; then compare the two outputs row by row and mask by mask."""
    import signal

    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from rayspine.io.store import read_disc_crops, read_mask_zarr

    archive = make_archive(work, n)
    reference, killed = work / f"reference-{n}", work / f"killed-{n}"
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from tests import oracle; from rayspine.runtime import init_ray; "
            f"init_ray(num_cpus={cpus}); from rayspine.pipeline.graph import run_pipeline; "
            f"run_pipeline({str(archive)!r}, sys.argv[1], seg_dir={str(archive)!r}, segment_stage=oracle.OracleSegmentScans, report=False)")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def start(out: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=ROOT, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    for out in (reference, killed):
        if out.exists():
            subprocess.run(["rm", "-rf", str(out)], check=True)
    assert start(reference).wait() == 0
    proc, rows = start(killed), 0
    while proc.poll() is None and rows < n // 2:
        time.sleep(0.5)
        try:
            rows = sum(pq.read_metadata(p).num_rows for p in (killed / "parts" / "scans").glob("*.parquet"))
        except OSError:
            pass
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert start(killed).wait() == 0
    tables = {}
    for name in ("scans", "discs"):
        a, b = (pd.read_parquet(out / f"{name}.parquet") for out in (reference, killed))
        drop = [c for c in a.columns if c.startswith("seconds_") or c == "node_id"]  # timings differ run to run
        pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop))
        tables[name] = len(a)
    masks_equal = all(np.array_equal(read_mask_zarr(reference / "masks.zarr", s).voxels, read_mask_zarr(killed / "masks.zarr", s).voxels)
                      for s in pd.read_parquet(reference / "scans.parquet").scan_id)
    assert masks_equal
    discs = pd.read_parquet(reference / "discs.parquet")
    discs = discs[discs.crop_index >= 0]
    crops_equal = bool(np.array_equal(read_disc_crops(reference / "crops.zarr", discs), read_disc_crops(killed / "crops.zarr", discs)))
    assert crops_equal
    files = {out.name: sum(1 for p in out.rglob("*") if p.is_file()) for out in (reference, killed)}
    return {"n": n, "killed_after_rows": rows, "scans": tables["scans"], "discs": tables["discs"], "tables_equal": True,
            "masks_equal": masks_equal, "crops_equal": crops_equal, "files": files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/rayspine-scale"))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--kill-resume", type=int, default=0, metavar="N", help="instead: the SIGKILL-and-resume check on N scans")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    args.work.mkdir(parents=True, exist_ok=True)
    if args.kill_resume:
        print(json.dumps(kill_and_resume(args.work, args.kill_resume, args.cpus)), flush=True)
        return
    for n in args.n:
        archive = make_archive(args.work, n)
        out = args.work / f"out-{n}"
        timing = score(archive, out, args.cpus)
        row = measure_outputs(out, timing)
        row["overhead_ms_per_scan"] = 1000 * (row["steady_s_per_scan"] - row["stage_cpu_s_per_scan"] / args.cpus)
        print(json.dumps(row), flush=True)
        with open(args.work / "results.jsonl", "a") as f:
            f.write(json.dumps({**row, "when": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")


if __name__ == "__main__":
    main()
