"""Zarr masks and crops, Parquet tables: every file appears atomically (write, then rename).

Layout of an output folder:
- ``masks.zarr/<scan_id>``: an OME-Zarr 0.5 label image per scan (one writer each), with the scan's
  spacing, origin and direction kept losslessly in the group attributes under ``rayspine``;
- ``crops.zarr/<scan_id>``: a ``(n_discs, 64, 64, 64)`` uint8 array, attribute ``levels`` giving each
  row's disc level; a disc row's ``crop_index`` is its row here;
- ``parts/<table>/<name>.parquet``: the rows of one block of scans (0.1: of one scan), written when
  the block is done, so a re-run knows what is complete; ``io.outputs`` picks one row per scan when it
  consolidates them into ``<table>.parquet``, so that file never holds a row twice.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from ..volume import Volume

OME_VERSION = "0.5"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed onto ``path`` when the block succeeds.

    The one way this project makes a file appear: readers see the old file or the whole new one, never
    a half-written one, and a failed write leaves only a hidden ``.name.tmp-*`` behind (removed here).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    os.replace(tmp, final)


def write_mask_zarr(root: str | Path, scan_id: str, mask: Volume, attrs: dict | None = None) -> Path:
    """Write one scan's label mask as an OME-Zarr 0.5 label image at ``root/scan_id``."""
    final = Path(root) / scan_id
    tmp = _atomic_dir(final)
    group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
    # OME-Zarr orders spatial axes z, y, x; our arrays are [x, y, z].
    data = np.ascontiguousarray(mask.voxels.transpose(2, 1, 0).astype(np.uint8))
    array = group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=_chunks(data.shape))
    array[...] = data
    group.attrs.update(
        {
            "ome": {
                "version": OME_VERSION,
                "multiscales": [
                    {
                        "name": scan_id,
                        "axes": [{"name": n, "type": "space", "unit": "millimeter"} for n in "zyx"],
                        "datasets": [
                            {
                                "path": "0",
                                "coordinateTransformations": [
                                    {"type": "scale", "scale": [float(s) for s in mask.spacing[::-1]]},
                                    {"type": "translation", "translation": [float(o) for o in mask.origin[::-1]]},
                                ],
                            }
                        ],
                    }
                ],
                "image-label": {"version": OME_VERSION},
            },
            "rayspine": {"grid": mask.grid(), **(attrs or {})},
        }
    )
    _publish(tmp, final)
    return final


def read_mask_zarr(root: str | Path, scan_id: str) -> Volume:
    group = zarr.open_group(store=str(Path(root) / scan_id), mode="r")
    grid = group.attrs["rayspine"]["grid"]
    voxels = np.asarray(group["0"][...]).transpose(2, 1, 0)
    return Volume(np.ascontiguousarray(voxels), tuple(grid["spacing"]), tuple(grid["origin"]), tuple(grid["direction"]))


def written_groups(root: str | Path) -> set[str]:
    """Names of the complete groups under a Zarr root (temporary folders of interrupted writes excluded)."""
    root = Path(root)
    if not root.is_dir():
        return set()
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


def write_crops_zarr(root: str | Path, scan_id: str, crops: np.ndarray, levels: list[int]) -> Path:
    """One scan's disc crops, ``(n, s, s, s)`` uint8, row i holding the disc at ``levels[i]``."""
    final = Path(root) / scan_id
    tmp = _atomic_dir(final)
    group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
    crops = np.ascontiguousarray(crops, dtype=np.uint8)
    array = group.create_array("crops", shape=crops.shape, dtype=np.uint8, chunks=(1, *crops.shape[1:]) if crops.ndim == 4 else None)
    if crops.size:
        array[...] = crops
    group.attrs["levels"] = [int(v) for v in levels]
    _publish(tmp, final)
    return final


def read_crops_zarr(root: str | Path, scan_id: str) -> tuple[np.ndarray, list[int]]:
    group = zarr.open_group(store=str(Path(root) / scan_id), mode="r")
    return np.asarray(group["crops"][...]), list(group.attrs["levels"])


def write_parquet_atomic(table: pa.Table, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def part_path(out: str | Path, table: str, name: str) -> Path:
    """Where one part of a table goes: ``parts/<table>/<name>.parquet`` (a block of scans, or 0.1's one scan)."""
    return Path(out) / "parts" / table / f"{name}.parquet"


def completed_parts(out: str | Path, table: str) -> list[Path]:
    """The parts of a table that were written whole (a killed write's hidden temporary never counts)."""
    folder = Path(out) / "parts" / table
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def read_parts(paths: list[Path], schema: pa.Schema, threads: int = 8) -> pa.Table:
    """The parts as one table conformed to ``schema``, read in parallel (hundreds of files on EFS).

    A column a part lacks is null; ``part_file`` (the part's name) is added, so a reader can tell the
    rows of one write from those of another.
    """
    from concurrent.futures import ThreadPoolExecutor

    def read(path: Path) -> pa.Table:
        table = _conform(pq.read_table(path), schema)
        return table.append_column("part_file", pa.array([path.stem] * table.num_rows, pa.string()))

    if not paths:
        return schema.empty_table().append_column("part_file", pa.array([], pa.string()))
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(paths)))) as pool:
        return pa.concat_tables(list(pool.map(read, paths)))


def consolidate_parts(out: str | Path, table: str, rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """Write the chosen part rows as ``out/<table>.parquet``, in the schema's columns, sorted by scan and level."""
    merged = _conform(rows, schema)
    if merged.num_rows:
        keys = [(k, "ascending") for k in ("scan_id", "level") if k in merged.column_names]
        merged = merged.sort_by(keys)
    merged = merged.replace_schema_metadata({**(schema.metadata or {})})
    write_parquet_atomic(merged, Path(out) / f"{table}.parquet")
    return merged


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast a part to the schema, adding missing nullable columns (a part with no latent, say)."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table[field.name].cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema.remove_metadata())


def write_json_atomic(data: dict, path: str | Path) -> Path:
    return write_text_atomic(json.dumps(data, indent=2, sort_keys=True, default=str), path)


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(min(s, 128) for s in shape)


def write_text_atomic(text: str, path: str | Path) -> Path:
    """A text file (CSV, Markdown, HTML, JSON) that appears whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
