"""Scan reading: every bad file is a typed ScanError with the right status; good files round-trip."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from rayspine.io.scans import ScanError, read_scan, scan_stem, write_scan
from rayspine.schema import ScanStatus
from rayspine.volume import Volume

RNG = np.random.default_rng(0)


def _header(path: Path, data: bytes | None = None, **fields: str) -> Path:
    """A MetaImage written by hand, so headers SimpleITK would refuse to write can be made."""
    header = {
        "ObjectType": "Image",
        "NDims": "3",
        "BinaryData": "True",
        "BinaryDataByteOrderMSB": "False",
        "CompressedData": "False",
        "TransformMatrix": "1 0 0 0 1 0 0 0 1",
        "Offset": "0 0 0",
        "ElementSpacing": "1 1 1",
        "DimSize": "4 4 4",
        "ElementType": "MET_FLOAT",
        "ElementDataFile": "LOCAL",  # must come last
    }
    header.update(fields)
    if data is None:
        count = int(np.prod([int(v) for v in header["DimSize"].split()]))
        data = RNG.random(min(count, 4096)).astype(np.float32).tobytes()
    path.write_bytes("".join(f"{k} = {v}\n" for k, v in header.items()).encode() + data)
    return path


def _random_image(shape=(6, 7, 8)) -> sitk.Image:
    return sitk.GetImageFromArray(RNG.random(shape[::-1]).astype(np.float32))


def _refused(path, status: str, reason: str, **kwargs) -> ScanError:
    with pytest.raises(ScanError) as info:
        read_scan(path, **kwargs)
    err = info.value
    assert err.status == status, str(err)
    assert reason in err.reason, str(err)
    assert str(path) in str(err)  # the message names the file
    return err


def test_good_header_written_by_hand_reads(tmp_path):
    volume = read_scan(_header(tmp_path / "ok.mha", ElementSpacing="0.5 1 3"))
    assert volume.shape == (4, 4, 4) and volume.spacing == (0.5, 1.0, 3.0)


def test_missing_and_empty_files(tmp_path):
    _refused(tmp_path / "missing.mha", ScanStatus.UNREADABLE, "no such file")
    (tmp_path / "empty.mha").write_bytes(b"")
    _refused(tmp_path / "empty.mha", ScanStatus.UNREADABLE, "empty file")


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "compressed"])
def test_truncated_mha(tmp_path, compress):
    full = tmp_path / "full.mha"
    sitk.WriteImage(_random_image((20, 30, 40)), str(full), useCompression=compress)
    data = full.read_bytes()
    (tmp_path / "cut.mha").write_bytes(data[: len(data) // 2])
    err = _refused(tmp_path / "cut.mha", ScanStatus.UNREADABLE, "voxel data unreadable")
    assert "No such file" not in err.reason  # ITK's stale errno is not passed on as the reason


def test_garbage_bytes_and_wrong_extension(tmp_path):
    (tmp_path / "noise.mha").write_bytes(np.random.default_rng(1).bytes(2000))
    _refused(tmp_path / "noise.mha", ScanStatus.UNREADABLE, "header unreadable")
    (tmp_path / "noise.nii.gz").write_bytes(np.random.default_rng(2).bytes(2000))
    _refused(tmp_path / "noise.nii.gz", ScanStatus.UNREADABLE, "header unreadable")
    (tmp_path / "notes.txt").write_text("not an image")
    _refused(tmp_path / "notes.txt", ScanStatus.UNREADABLE, "header unreadable")
    # A MetaImage's bytes under a NIfTI name: the NIfTI reader is chosen by name and refuses it.
    sitk.WriteImage(_random_image(), str(tmp_path / "real.mha"))
    (tmp_path / "renamed.nii.gz").write_bytes((tmp_path / "real.mha").read_bytes())
    _refused(tmp_path / "renamed.nii.gz", ScanStatus.UNREADABLE, "unreadable")


def test_wrong_dimensionality_and_components(tmp_path):
    two_d = _header(
        tmp_path / "2d.mha", NDims="2", DimSize="4 4", TransformMatrix="1 0 0 1", Offset="0 0", ElementSpacing="1 1"
    )
    _refused(two_d, ScanStatus.BAD_HEADER, "2-D image")
    sitk.WriteImage(sitk.GetImageFromArray(RNG.random((5, 6)).astype(np.float32)), str(tmp_path / "slice.nrrd"))
    _refused(tmp_path / "slice.nrrd", ScanStatus.BAD_HEADER, "2-D image")
    four_d = _header(
        tmp_path / "4d.mha",
        NDims="4",
        DimSize="4 4 4 2",
        TransformMatrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1",
        Offset="0 0 0 0",
        ElementSpacing="1 1 1 1",
    )
    _refused(four_d, ScanStatus.BAD_HEADER, "4-D image")
    image = _random_image()
    sitk.WriteImage(sitk.Compose([image, image, image]), str(tmp_path / "vector.mha"))
    _refused(tmp_path / "vector.mha", ScanStatus.BAD_HEADER, "3 components")


def test_bad_voxels(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 5, 6), np.nan, np.float32)), str(tmp_path / "nan.mha"))
    _refused(tmp_path / "nan.mha", ScanStatus.BAD_VOXELS, "no finite voxels")
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 5, 6), 7, np.int16)), str(tmp_path / "const.nii.gz"))
    _refused(tmp_path / "const.nii.gz", ScanStatus.BAD_VOXELS, "constant image")
    # NaNs around one finite value are still constant; a mask read with check_voxels=False is fine.
    voxels = np.full((4, 5, 6), np.nan, np.float32)
    voxels[1, 1, 1] = 3.0
    sitk.WriteImage(sitk.GetImageFromArray(voxels), str(tmp_path / "one.mha"))
    _refused(tmp_path / "one.mha", ScanStatus.BAD_VOXELS, "constant image")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8)), str(tmp_path / "empty_mask.mha"))
    assert read_scan(tmp_path / "empty_mask.mha", check_voxels=False).voxels.sum() == 0


def test_non_orthonormal_direction(tmp_path):
    _refused(
        _header(tmp_path / "skew.mha", TransformMatrix="1 0 0 0.5 1 0 0 0 1"),
        ScanStatus.BAD_HEADER,
        "not orthonormal",
    )
    _refused(
        _header(tmp_path / "scaled.mha", TransformMatrix="1 0 0 0 2 0 0 0 1"),
        ScanStatus.BAD_HEADER,
        "not orthonormal",
    )


@pytest.mark.parametrize(
    "spacing, reason",
    [
        ("0 1 1", "non-positive"),
        ("1 -1 1", "non-positive"),
        ("1 1 1000", "absurd spacing"),
        ("1 0.001 1", "absurd spacing"),
    ],
)
def test_bad_spacing(tmp_path, spacing, reason):
    _refused(_header(tmp_path / "s.mha", ElementSpacing=spacing), ScanStatus.BAD_HEADER, reason)


def test_enormous_dimensions_refused_before_allocation(tmp_path):
    path = _header(tmp_path / "huge.mha", DimSize="100000 100000 100000")  # 4 PB of float32
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    _refused(path, ScanStatus.BAD_HEADER, "absurd size")
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000  # KiB: < 100 MB
    _refused(_header(tmp_path / "long.mha", DimSize="5000 2 2"), ScanStatus.BAD_HEADER, "absurd size")


def test_mhd_data_file_outside_its_folder(tmp_path):
    (tmp_path / "secret.raw").write_bytes(np.zeros(64, np.float32).tobytes())
    (tmp_path / "scans").mkdir()
    header = "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_FLOAT\nElementDataFile = {}\n"
    (tmp_path / "scans" / "up.mhd").write_text(header.format("../secret.raw"))
    _refused(tmp_path / "scans" / "up.mhd", ScanStatus.UNREADABLE, "outside the scan's folder")
    (tmp_path / "scans" / "abs.mhd").write_text(header.format(tmp_path / "secret.raw"))
    _refused(tmp_path / "scans" / "abs.mhd", ScanStatus.UNREADABLE, "outside the scan's folder")
    (tmp_path / "scans" / "gone.mhd").write_text(header.format("gone.raw"))  # inside, but missing
    _refused(tmp_path / "scans" / "gone.mhd", ScanStatus.UNREADABLE, "unreadable")


def test_symlink_loop_and_broken_link(tmp_path):
    os.symlink(tmp_path / "b.mha", tmp_path / "a.mha")
    os.symlink(tmp_path / "a.mha", tmp_path / "b.mha")
    _refused(tmp_path / "a.mha", ScanStatus.UNREADABLE, "symbolic link")
    os.symlink(tmp_path / "nowhere.mha", tmp_path / "dangling.mha")
    _refused(tmp_path / "dangling.mha", ScanStatus.UNREADABLE, "symbolic link")


def test_empty_dicom_folder(tmp_path):
    (tmp_path / "series").mkdir()
    _refused(tmp_path / "series", ScanStatus.UNREADABLE, "no DICOM series")
    (tmp_path / "series" / "IM0001.dcm").write_bytes(b"\0" * 200)  # not DICOM inside either
    _refused(tmp_path / "series", ScanStatus.UNREADABLE, "no DICOM series")


def _oblique() -> tuple[float, ...]:
    """An orthonormal, non-axis-aligned direction (a sagittal stack turned by 10 degrees)."""
    t = np.radians(10)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    perm = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)  # PIR, as a DICOM sagittal series
    return tuple((rot @ perm).ravel())


@pytest.mark.parametrize("suffix", [".mha", ".nii.gz", ".nii", ".nrrd", ".mhd"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_round_trip_keeps_voxels_and_grid(tmp_path, suffix, dtype):
    voxels = (RNG.random((5, 6, 7)) * 1000).astype(dtype)
    volume = Volume(voxels, (0.6, 0.7, 3.5), (-12.5, 40.25, 101.0), _oblique())
    path = tmp_path / f"scan{suffix}"
    write_scan(volume, path)
    back = read_scan(path)
    assert scan_stem(path) == "scan"
    assert back.voxels.dtype == voxels.dtype and np.array_equal(back.voxels, voxels)
    # NIfTI stores the grid in float32; the others keep it exactly.
    tol = 1e-5 if suffix.startswith(".nii") else 1e-12
    assert np.allclose(back.spacing, volume.spacing, atol=tol)
    assert np.allclose(back.origin, volume.origin, atol=tol * 100)
    assert np.allclose(back.direction, volume.direction, atol=tol)
    # Nothing left behind; a .mhd's data file has its final name beside the header.
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    if suffix == ".mhd":
        assert "ElementDataFile = scan.zraw" in path.read_text()
