"""Benchmark: crop + all geometry of one disc (median over discs and repeats, one core).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_geometry.py [--repeats 20] [--out bench/geometry.md]

Times ``crop_disc`` (nearest-neighbour resampling to 1.4 x 1.2 x 1.5 mm, 64^3 centre-of-mass crop) plus
``measure_disc`` (height, widths, three angles, volume) on each disc's bounding-box mask, as
``measure_mask`` calls them. Discs: the real 1 mm masks in ../shared/data when present, and analytic
phantoms at 1 mm isotropic and at SPIDER-like 3.3 x 0.6 x 0.6 mm spacing. Also times ``measure_mask``
on a whole 5-disc label mask (instances + crops + geometry).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, before numpy loads a BLAS
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from tests.phantoms import disc_phantom, spine_phantom  # noqa: E402
from rayspine.config import Config  # noqa: E402
from rayspine.measure.crops import crop_disc  # noqa: E402
from rayspine.measure.instances import disc_instances  # noqa: E402
from rayspine.measure.geometry import measure_disc  # noqa: E402
from rayspine.measure.command import measure_mask  # noqa: E402
from rayspine.volume import Volume  # noqa: E402

CFG = Config()


def real_discs() -> list[tuple[str, np.ndarray, tuple]]:
    try:
        from tests.conftest import FASTCLEVERSEG_DIR, REAL_SUBJECTS, load_real_subject
    except ImportError:
        return []
    if not FASTCLEVERSEG_DIR.exists():
        return []
    out = []
    for subject in REAL_SUBJECTS:
        _, mask = load_real_subject(subject)
        for d in disc_instances(mask.voxels, mask.spacing, CFG.discs):
            out.append((f"real s{subject} L{d.level}", d.mask, mask.spacing))
    return out


def phantom_discs() -> list[tuple[str, np.ndarray, tuple]]:
    out = []
    for spacing in [(1.0, 1.0, 1.0), (3.3, 0.6, 0.6)]:
        for angles in [(0, 0, 0), (20, 0, 0), (15, -10, 20)]:
            mask = disc_phantom(10, 46, 34, *angles, spacing=spacing, offset=(0.3, 0.2, 0.1))
            box = ndimage.find_objects(mask.astype(np.uint8))[0]  # as disc_instances hands it over
            out.append((f"phantom {spacing} {angles}", mask[box], spacing))
    return out


def time_disc(mask: np.ndarray, spacing, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        crop, _, _ = crop_disc(mask, spacing, CFG.grid.spacing_mm, CFG.discs.crop_size)
        measure_disc(mask, spacing)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # pin to one core
    except (AttributeError, OSError):
        pass
    rows = []
    for name, mask, spacing in real_discs() + phantom_discs():
        rows.append((name, mask.shape, int(mask.sum()), time_disc(mask, spacing, args.repeats) * 1e3))
    labels = spine_phantom()
    scan = []
    for _ in range(max(3, args.repeats // 4)):
        started = time.perf_counter()
        measure_mask(Volume(labels, (1.0, 1.0, 1.0)), CFG)
        scan.append(time.perf_counter() - started)
    per_disc = [r[3] for r in rows]
    lines = [
        "# Geometry benchmark: crop + all geometry of one disc",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_geometry.py --repeats {args.repeats}`",
        f"Machine: 2-core x86 CPU VM ({platform.machine()}, {os.cpu_count()} cores visible, pinned to one), "
        f"load average {os.getloadavg()[0]:.1f} at the end (shared with other jobs); Python {platform.python_version()}, numpy {np.__version__}",
        "",
        f"**Median over all discs: {statistics.median(per_disc):.2f} ms per disc** (max {max(per_disc):.2f} ms; target <= 20 ms).",
        f"Whole 5-disc label mask 80x70x200 through `measure_mask` (instances, crops, geometry): median {statistics.median(scan) * 1e3:.1f} ms.",
        "",
        "| disc | bbox shape | voxels | median ms (crop + geometry) |",
        "|---|---|---|---|",
        *[f"| {n} | {s} | {v} | {t:.2f} |" for n, s, v, t in rows],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
