"""Where a run's start-up goes: every Ray worker process of one ``run_pipeline``, from ``ray.timeline()``.

    python bench/pipeline_timeline.py --seg MODEL_DIR [--ae AE_DIR] --n 128

Prints, per worker process (in the order they first did something), when it first worked and when it
last did (seconds from ``run_pipeline``'s start), when its actor constructor began and how long it ran,
its busy seconds and what it ran. Recording the events slows the run a little (63 s against 50 s for
the same 128 scans). The archive is bench_pipeline.py's (cached under the same folder). Results:
bench/pipeline.md, session 10.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench_pipeline import archive_of, run_options

from rayspine.config import Config

PLUMBING = {"task:deserialize_arguments", "task:execute", "task:store_outputs", "submit_task"}


def per_process(events: list[dict], started: float) -> list[dict]:
    """One summary per process (the events' ``tid``) of Chrome-trace events; times from ``started`` (s)."""
    processes: dict[str, dict] = {}
    for event in events:
        if event.get("ph") != "X":
            continue
        begin, seconds = event["ts"] / 1e6 - started, event["dur"] / 1e6
        name = event["name"].rsplit(".", 1)[-1]
        process = processes.setdefault(str(event["tid"]), {"process": str(event["tid"])[:20], "first_s": begin, "last_s": 0.0,
                                                            "busy_s": 0.0, "init": None, "ran": Counter()})
        process["first_s"] = min(process["first_s"], begin)
        process["last_s"] = max(process["last_s"], begin + seconds)
        if name == "__init__":
            process["init"] = (round(begin, 2), round(seconds, 2))
        if event["name"] not in PLUMBING:
            process["ran"][name] += 1
            process["busy_s"] += seconds
    return sorted(processes.values(), key=lambda p: p["first_s"])


def main() -> None:
    import ray

    from rayspine.pipeline.graph import run_pipeline
    from rayspine.runtime import init_ray

    args = run_options(n=128).parse_args()
    archive = archive_of(args.n, args.cache)
    init_ray()
    out = Path(tempfile.mkdtemp(prefix="timeline-")) / "out"
    started = time.time()
    run_pipeline(archive, out, seg_dir=args.seg, ae_dir=args.ae, cfg=Config().replace(seg={"inference_precision": args.precision}), report=False)
    print(f"run_pipeline: {time.time() - started:.1f} s")
    trace = out.parent / "timeline.json"
    ray.timeline(filename=str(trace))
    for process in per_process(json.loads(trace.read_text()), started):
        print(f"{process['process']:20s} first {process['first_s']:6.2f} last {process['last_s']:6.2f} busy {process['busy_s']:6.2f} "
              f"init {process['init']} {dict(process['ran'])}")
    shutil.rmtree(out.parent)


if __name__ == "__main__":
    main()
