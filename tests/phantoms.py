"""Analytic disc phantoms with known geometry, importable by any test.

A phantom disc is an elliptic cylinder (flat end plates, elliptic outline): ``height`` along its own
normal, ``lateral`` and ``ap`` the full axis lengths of its outline, in mm. It is turned by
R = Rx(sagittal) . Rz(transverse) . Ry(coronal) (``measure.geometry.disc_rotation``, right-hand rule in LPS) and
rasterised on an LPS grid ``[x, y, z]`` by testing each voxel centre in physical space, so the
expected geometry is exact and independent of the code under test.
"""

from __future__ import annotations

import numpy as np

from rayspine.measure.geometry import disc_rotation  # noqa: F401 - the convention, for the tests
from rayspine.schema import DISC_LABEL_OFFSET


def inside_disc(points: np.ndarray, centre, rotation, height, lateral, ap) -> np.ndarray:
    """Which physical points (..., 3) lie inside the disc."""
    q = (np.asarray(points, float) - np.asarray(centre, float)) @ np.asarray(rotation)  # = R^T (p - c)
    return ((q[..., 0] / (lateral / 2)) ** 2 + (q[..., 1] / (ap / 2)) ** 2 <= 1.0) & (np.abs(q[..., 2]) <= height / 2)


def grid_points(shape, spacing, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    axes = [origin[i] + spacing[i] * np.arange(shape[i]) for i in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def disc_phantom(
    height: float = 10.0,
    lateral: float = 45.0,
    ap: float = 34.0,
    sagittal: float = 0.0,
    transverse: float = 0.0,
    coronal: float = 0.0,
    spacing=(1.0, 1.0, 1.0),
    offset=(0.0, 0.0, 0.0),
    margin: float = 6.0,
) -> np.ndarray:
    """A boolean mask holding one disc, centred in a grid that fits it with ``margin`` mm to spare.

    ``offset`` moves the disc's centre off the grid's voxel lattice (mm), to test sub-voxel phases.
    """
    radius = 0.5 * float(np.sqrt(height**2 + lateral**2 + ap**2)) + margin
    shape = tuple(int(np.ceil(2 * radius / s)) + 1 for s in spacing)
    centre = np.array([(n - 1) * s / 2 for n, s in zip(shape, spacing)]) + np.asarray(offset, float)
    rotation = disc_rotation(sagittal, transverse, coronal)
    return inside_disc(grid_points(shape, spacing), centre, rotation, height, lateral, ap)


def spine_phantom(
    n_discs: int = 5,
    spacing=(1.0, 1.0, 1.0),
    shape=(80, 70, 200),
    gap: float = 26.0,
    height: float = 10.0,
    lateral: float = 45.0,
    ap: float = 34.0,
    sagittal_step: float = 5.0,
) -> np.ndarray:
    """A SPIDER-style label mask (uint8 array [x, y, z]) with ``n_discs`` discs stacked along z.

    Disc i (from the bottom) gets label 201 + i and a sagittal tilt of ``sagittal_step * (2 - i)``
    degrees, like a lordotic lumbar spine; a vertebra-like block (label 1 + i) sits above each disc.
    """
    points = grid_points(shape, spacing)
    labels = np.zeros(shape, np.uint8)
    extent = np.array([(n - 1) * s for n, s in zip(shape, spacing)])
    for i in range(n_discs):
        centre = np.array([extent[0] / 2, extent[1] / 2, gap * (i + 1)])
        rotation = disc_rotation(sagittal=sagittal_step * (2 - i))
        labels[inside_disc(points, centre, rotation, height, lateral, ap)] = DISC_LABEL_OFFSET + 1 + i
        body = (np.abs(points[..., 0] - centre[0]) < 18) & (np.abs(points[..., 1] - centre[1]) < 14)
        body &= (points[..., 2] > centre[2] + height / 2 + 2) & (points[..., 2] < centre[2] + gap - height / 2 - 2)
        labels[body & (labels == 0)] = 1 + i
    return labels
