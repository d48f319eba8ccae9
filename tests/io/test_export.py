"""rayspine export: masks on their scan's own grid, voxel for voxel, with SPIDER's label tables; 100 scans fast."""

from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk

from rayspine.io.export import ITKSNAP_LABELS, SLICER_COLORS, export_masks
from rayspine.io.store import read_mask_zarr, write_mask_zarr
from rayspine.volume import Volume


def _oblique_mask(seed: int, shape=(40, 36, 12)) -> Volume:
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    for level in range(1, 5):
        z = 2 * level
        labels[5 + level : 30, 4:30 - level, z : z + 2] = 200 + level
    labels[rng.random(shape) > 0.98] = 0
    a, b = 0.2 + 0.01 * seed, -0.1
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    direction = tuple((rz @ rx).ravel())
    return Volume(labels, (0.4296875, 0.4296875, 4.4), (-101.25 + seed, 33.5, -7.125), direction)


@pytest.mark.parametrize("fmt, suffix", [("nifti", ".nii.gz"), ("nrrd", ".nrrd"), ("mha", ".mha")])
def test_exported_mask_has_the_scans_grid_and_the_zarr_voxels(tmp_path, fmt, suffix):
    mask = _oblique_mask(0)
    write_mask_zarr(tmp_path / "masks.zarr", "3_t2", mask)
    (path,) = export_masks(tmp_path, fmt)
    assert path == tmp_path / f"masks-{fmt}" / f"3_t2{suffix}"
    image = sitk.ReadImage(str(path))
    stored = read_mask_zarr(tmp_path / "masks.zarr", "3_t2")
    assert image.GetSize() == mask.shape
    tol = 1e-5 if fmt == "nifti" else 1e-12  # NIfTI keeps its header in float32
    np.testing.assert_allclose(image.GetSpacing(), mask.spacing, rtol=tol)
    np.testing.assert_allclose(image.GetOrigin(), mask.origin, rtol=tol, atol=1e-4 if fmt == "nifti" else 1e-12)
    np.testing.assert_allclose(image.GetDirection(), mask.direction, atol=tol)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), stored.voxels)
    assert sitk.GetArrayFromImage(image).dtype == np.uint8


def test_label_tables_name_the_discs(tmp_path):
    write_mask_zarr(tmp_path / "masks.zarr", "a", _oblique_mask(1))
    export_masks(tmp_path, "nifti", tmp_path / "view")
    itksnap = (tmp_path / "view" / ITKSNAP_LABELS).read_text().splitlines()
    assert "ITK-SnAP Label Description File" in itksnap[1]
    rows = {int(line.split()[0]): line for line in itksnap if not line.startswith("#")}
    assert rows[201].endswith('"L5/S1"') and rows[205].endswith('"L1/L2"') and rows[100].endswith('"spinal canal"')
    assert rows[0].endswith('"Clear Label"') and len(rows[201].split()) == 8
    slicer = [line.split() for line in (tmp_path / "view" / SLICER_COLORS).read_text().splitlines() if not line.startswith("#")]
    assert ["202", "L4/L5"] == slicer[[r[0] for r in slicer].index("202")][:2] and all(len(r) == 6 for r in slicer)


def test_export_refuses_a_folder_without_masks(tmp_path):
    with pytest.raises(FileNotFoundError, match="masks.zarr"):
        export_masks(tmp_path, "nifti")
    write_mask_zarr(tmp_path / "masks.zarr", "a", _oblique_mask(1))
    with pytest.raises(ValueError, match="nifti"):
        export_masks(tmp_path, "png")


def test_export_of_100_scans_takes_under_a_minute(tmp_path):
    mask = _oblique_mask(2, shape=(96, 96, 16))  # a small scan's mask: 96 x 96 x 16 voxels
    for i in range(100):
        write_mask_zarr(tmp_path / "masks.zarr", f"{i}_t2", mask)
    started = time.perf_counter()
    written = export_masks(tmp_path, "nifti")
    seconds = time.perf_counter() - started
    assert len(written) == 100 and all(p.stat().st_size > 0 for p in written)
    assert seconds < 60, f"export of 100 scans took {seconds:.1f} s"
    print(f"export of 100 scans: {seconds:.2f} s")
