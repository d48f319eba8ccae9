"""Where the first result's seconds go (issue 16.3): Ray's timeline up to the first ``scans`` part.

Scores N tiny synthetic scans (``bench_scale.py``'s archive, the oracle segmentation stage) in a fresh
driver on a local Ray of 2 CPUs, stops at the first part, and prints the driver's own marks (graph built,
first part) and Ray's timeline events (tasks, actor constructors), in seconds after ``ray.init`` returned.

    python bench/first_result_timeline.py 500
"""
import json, os, signal, subprocess, sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]; sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "bench"))
from bench_scale import make_archive
n = int(sys.argv[1]) if len(sys.argv) > 1 else 500; work = Path("/tmp/scale"); trace = work / "first_result_timeline.json"; archive = make_archive(work, n); out = work / f"tl-{n}"
subprocess.run(["rm", "-rf", str(out)])
code = f"""
import sys, time, threading, os, json; sys.path.insert(0, {str(ROOT)!r})
t0 = time.time()
from rayspine.runtime import init_ray
init_ray(num_cpus=2); up = time.time()
import ray
import rayspine.pipeline.graph as graph
from tests import oracle
from pathlib import Path
out = Path({str(out)!r})
marks = {{}}
orig_build = graph.build_graph
def build(*a, **k):
    marks["build_start"] = time.time(); r = orig_build(*a, **k); marks["build_end"] = time.time(); return r
graph.build_graph = build
th = threading.Thread(target=lambda: graph.run_pipeline({str(archive)!r}, str(out), seg_dir={str(archive)!r}, segment_stage=oracle.OracleSegmentScans, report=False, overwrite=True), daemon=True)
marks["run_start"] = time.time(); th.start()
while True:
    d = out / "parts" / "scans"
    if d.is_dir() and any(d.glob("*.parquet")):
        break
    time.sleep(0.05)
marks["first_part"] = time.time()
ray.timeline(filename={str(trace)!r})
print("MARKS", json.dumps({{k: round(v - up, 2) for k, v in marks.items()}}), "ray_start", round(up - t0, 2), "UP", up, flush=True)
os._exit(0)
"""
env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}; env["OMP_NUM_THREADS"] = "1"
# A session of its own, so the driver's local Ray (raylet, GCS, workers) can be killed with it afterwards.
proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
                        start_new_session=True)
lines = [line for line in proc.stdout if line.startswith("MARKS")]
proc.wait()
os.killpg(proc.pid, signal.SIGKILL)
if not lines:
    sys.exit("the driver stopped before the first part")
print(lines[0].split(" UP ")[0])
up = float(lines[0].split(" UP ")[1])
events = json.load(open(trace))
spans = sorted((e["ts"] / 1e6 - up, e.get("dur", 0) / 1e6, e["name"]) for e in events if e.get("ph") == "X" and not e["name"].startswith("task:"))
for start, seconds, name in spans:
    print(f"{start:7.2f} s  +{seconds:5.2f} s  {name[:90]}")
