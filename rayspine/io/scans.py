"""Reading and writing scans: .mha, .mhd, .nii, .nii.gz, .nrrd files and DICOM series folders.

The header is read and checked before any voxel is allocated, so a file that declares absurd
dimensions is refused cheaply. Every refusal is a ``ScanError`` naming the file, a status from
``schema.ScanStatus`` and the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import ScanError  # noqa: F401 - raised here, caught by callers
from ..config import ScanLimits
from ..schema import ScanStatus
from ..volume import Volume, from_sitk, to_sitk

SCAN_SUFFIXES = (".mha", ".mhd", ".nii", ".nii.gz", ".nrrd")


def scan_stem(path: str | os.PathLike) -> str:
    """File name without its scan suffix: ``12_t1.nii.gz`` -> ``12_t1``; a DICOM folder -> its name."""
    name = Path(path).name
    for suffix in sorted(SCAN_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_scan_path(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SCAN_SUFFIXES) and not path.name.startswith(".")


def read_scan(path: str | os.PathLike, limits: ScanLimits = ScanLimits(), check_voxels: bool = True) -> Volume:
    """Read one scan (a file, or a folder holding one DICOM series) as a ``Volume``.

    ``check_voxels=False`` is for label masks, where a constant (all-background) volume is a
    finding ("no discs"), not a broken file.
    """
    path = Path(path)
    reader = _header_reader(path)
    _check_header(path, reader, limits)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise ScanError(
            path, ScanStatus.UNREADABLE, f"voxel data unreadable (truncated or corrupt?): {_first_line(err)}"
        ) from None
    volume = from_sitk(image)
    if check_voxels:
        _check_voxels(path, volume.voxels)
    return volume


def _header_reader(path: Path) -> sitk.ImageReaderBase:
    if path.is_symlink() and not path.exists():
        raise ScanError(path, ScanStatus.UNREADABLE, "broken or looping symbolic link")
    if path.is_dir():
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
        if not ids:
            raise ScanError(path, ScanStatus.UNREADABLE, "folder holds no DICOM series")
        if len(ids) > 1:
            raise ScanError(path, ScanStatus.UNREADABLE, f"folder holds {len(ids)} DICOM series, expected one")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0]))
        return reader
    if not path.is_file():
        raise ScanError(path, ScanStatus.UNREADABLE, "no such file")
    if path.stat().st_size == 0:
        raise ScanError(path, ScanStatus.UNREADABLE, "empty file")
    if path.name.lower().endswith(".mhd"):
        _check_mhd_data_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ScanError(path, ScanStatus.UNREADABLE, f"header unreadable: {_first_line(err)}") from None
    return reader


def _check_mhd_data_file(path: Path) -> None:
    """A .mhd names its data file; refuse one that points outside the header's own folder."""
    text = path.read_text(errors="replace")
    match = re.search(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", text, flags=re.MULTILINE)
    if not match:
        raise ScanError(path, ScanStatus.UNREADABLE, "MetaImage header names no ElementDataFile")
    target = match.group(1)
    if target.upper() in ("LOCAL",) or target.upper().startswith("LIST"):
        return
    folder = path.parent.resolve()
    resolved = (folder / target).resolve()
    if folder not in resolved.parents:
        raise ScanError(path, ScanStatus.UNREADABLE, f"data file {target!r} lies outside the scan's folder")


def _check_header(path: Path, reader: sitk.ImageReaderBase, limits: ScanLimits) -> None:
    if isinstance(reader, sitk.ImageSeriesReader):
        return  # DICOM geometry is checked after loading (GDCM reads slices one by one)
    dims = reader.GetDimension()
    size = reader.GetSize()
    if dims != 3:
        raise ScanError(path, ScanStatus.BAD_HEADER, f"{dims}-D image, expected 3-D (size {size})")
    if reader.GetNumberOfComponents() != 1:
        raise ScanError(path, ScanStatus.BAD_HEADER, f"{reader.GetNumberOfComponents()} components per voxel")
    _check_geometry(path, size, reader.GetSpacing(), reader.GetDirection(), limits)


def _check_geometry(path, size, spacing, direction, limits: ScanLimits) -> None:
    if min(size) < 1 or max(size) > limits.max_dim or int(np.prod(size, dtype=np.int64)) > limits.max_voxels:
        raise ScanError(path, ScanStatus.BAD_HEADER, f"absurd size {tuple(size)}")
    spacing = np.asarray(spacing, dtype=float)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ScanError(path, ScanStatus.BAD_HEADER, f"non-finite or non-positive spacing {tuple(spacing.tolist())}")
    if np.any(spacing < limits.min_spacing_mm) or np.any(spacing > limits.max_spacing_mm):
        raise ScanError(path, ScanStatus.BAD_HEADER, f"absurd spacing {tuple(spacing.tolist())} mm")
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(matrix)) or not np.allclose(matrix.T @ matrix, np.eye(3), atol=limits.orthonormal_tol):
        raise ScanError(path, ScanStatus.BAD_HEADER, "direction matrix is not orthonormal")


def _check_voxels(path: Path, voxels: np.ndarray) -> None:
    if np.issubdtype(voxels.dtype, np.floating):
        finite = np.isfinite(voxels)
        if not finite.any():
            raise ScanError(path, ScanStatus.BAD_VOXELS, "no finite voxels")
        values = voxels[finite]
    else:
        values = voxels
    if values.min() == values.max():
        raise ScanError(path, ScanStatus.BAD_VOXELS, f"constant image (every voxel {values.flat[0]})")


def write_scan(volume: Volume, path: str | os.PathLike, compress: bool = True) -> None:
    """Write a volume (any of the file suffixes); the file appears atomically.

    It is written under its final name in a hidden scratch folder beside it, then moved: a ``.mhd``
    header names its data file (``.raw``/``.zraw``), so that file keeps its final name too and is
    moved first, the header last.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        sitk.WriteImage(to_sitk(volume), str(scratch / path.name), useCompression=compress)
        for produced in sorted(scratch.iterdir(), key=lambda p: p.name == path.name):
            os.replace(produced, path.parent / produced.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _first_line(err: Exception) -> str:
    # ITK puts the useful sentence last ("... Description: ..."); keep it short. A trailing "Reason: ..."
    # is strerror(errno), often stale ("No such file or directory" for a truncated file): drop it.
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.strip().startswith("Reason:")]
    line = lines[-1] if lines else type(err).__name__
    return re.sub(r"^ITK ERROR: \w+\(0x[0-9a-f]+\): ", "", line)[:300]
