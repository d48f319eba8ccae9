"""Shared fixtures: the real data in ../shared (skipped cleanly when absent) and a local Ray."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Property tests draw the same examples on every run and machine (no example database): a test that
# passes only sometimes is a failing test.
settings.register_profile("rayspine", derandomize=True, database=None)
settings.load_profile("rayspine")

# One BLAS/torch thread per process: tests and Ray workers share a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPIDER_DIR = SHARED_DATA / "spider"
FASTCLEVERSEG_DIR = SHARED_DATA / "ribeirao_ivd_fastcleverseg"
REAL_SUBJECTS = (11, 20, 25)


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


def load_real_subject(subject: int):
    """A real T2 volume and its disc mask (SPIDER labels 201..205) as Volumes on a 1 mm LPS grid.

    The .mat axes (see its PROVENANCE.md) run superior->inferior, anterior->posterior, left-right;
    ours are [x right->left, y anterior->posterior, z inferior->superior]. The file stores no spacing;
    the provenance notes find it about 1 mm isotropic.
    """
    from scipy.io import loadmat

    from rayspine.volume import Volume

    data = loadmat(require(FASTCLEVERSEG_DIR / f"subject_{subject}.mat"))
    to_xyz = lambda a: np.ascontiguousarray(np.transpose(a, (2, 1, 0))[:, :, ::-1])  # noqa: E731
    image = to_xyz(data["I"]).astype(np.float32)
    gt = to_xyz(data["GT"]).astype(np.uint8)
    mask = np.where(gt > 0, gt.astype(np.uint16) + 200, 0).astype(np.uint8)
    spacing = (1.0, 1.0, 1.0)
    return Volume(image, spacing), Volume(mask, spacing)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (starting Ray costs seconds)."""
    import ray

    from rayspine.runtime import keep_idle_workers

    if not ray.is_initialized():
        keep_idle_workers()  # as init_ray does
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
