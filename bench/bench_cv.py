"""Time the disc-narrowing cross-validation at SPIDER's size: plain loop vs Ray tasks.

A fabricated discs table shaped like SPIDER's gradings (218 patients x 7 discs = 1526 discs, 64 latent
+ 7 geometric columns, label depending on height plus noise), the paper's XGBoost settings and 1000
patient-bootstrap resamples. Usage: .venv/bin/python bench/bench_cv.py [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd

from rayspine.predict.cv import cross_validate
from rayspine.runtime import ray_map
from rayspine.config import CVConfig
from rayspine.schema import geometry_columns, LABEL_COLUMN, latent_columns


def table(patients=218, levels=7, k=64, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = patients * levels
    t = pd.DataFrame({"scan_id": np.repeat([f"{p}_t2" for p in range(patients)], levels),
                      "patient_id": np.repeat([str(p) for p in range(patients)], levels),
                      "level": np.tile(np.arange(1, levels + 1), patients), "status": "ok"})
    for c in geometry_columns():
        t[c] = rng.normal(size=n)
    for c in latent_columns(k):
        t[c] = rng.normal(size=n).astype(np.float32)
    t[LABEL_COLUMN] = ((t["height_mm"] + 0.5 * t["z0"] + rng.normal(size=n)) < -0.3).astype(int)
    return t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    data, cv = table(), CVConfig()
    t0 = time.perf_counter()
    loop, _ = cross_validate(data, cv)
    t_loop = time.perf_counter() - t0

    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        cross_validate(data.head(200), CVConfig(n_bootstrap=10), run_all=ray_map)  # warm the workers
        t0 = time.perf_counter()
        dist, _ = cross_validate(data, cv, run_all=ray_map)
        t_ray = time.perf_counter() - t0
    finally:
        ray.shutdown()
    same = np.allclose(loop[["f1", "auc", "auc_lo", "auc_hi"]], dist[["f1", "auc", "auc_lo", "auc_hi"]])
    print(f"discs={len(data)} fits={len(loop) * cv.folds} bootstrap={cv.n_bootstrap}")
    print(f"loop: {t_loop:.1f} s   ray ({args.cpus} CPUs): {t_ray:.1f} s   speed-up {t_loop / t_ray:.2f}x   identical results: {same}")
    print(loop.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
