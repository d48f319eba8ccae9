"""Segmentation on the three real T2 volumes of ../shared with the CLI's defaults (issue 15).

Builds a SPIDER-layout archive of subjects 11, 20 and 25 (``ribeirao_ivd_fastcleverseg``: 1 mm 3-D T2,
manual disc masks; read by ``tests/conftest.load_real_subject``) in --work, then runs exactly what the
README tells a user to run, ``rayspine train-seg ARCHIVE -o MODEL`` with no options, and prints the
protocol and the out-of-fold test figures from its ``metrics.json``. Minutes to an hour on 2 cores.

    python bench/bench_real_t2.py [--work /tmp/real-t2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = (11, 20, 25)


def build_archive(root: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from rayspine.io.scans import write_scan
    from tests.conftest import load_real_subject

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for subject in SUBJECTS:
        image, mask = load_real_subject(subject)
        write_scan(image, root / "images" / f"{subject}_t2.mha")
        write_scan(mask, root / "masks" / f"{subject}_t2.mha")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/real-t2"))
    args = parser.parse_args()
    archive = build_archive(args.work / "archive")
    model = args.work / "model"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rayspine.cli", "train-seg", str(archive), "-o", str(model)], check=True, cwd=ROOT)
    metrics = json.loads((model / "metrics.json").read_text())
    print(json.dumps({"wall_min": (time.perf_counter() - started) / 60, **metrics}, indent=2, default=str))


if __name__ == "__main__":
    main()
