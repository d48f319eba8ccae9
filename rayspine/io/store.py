"""Zarr masks and crops, Parquet tables: every file appears atomically (write, then rename).

Layout of an output folder:
- ``masks.zarr/<scan_id>``: an OME-Zarr 0.5 label image per scan (one writer each), with the scan's
  spacing, origin and direction kept losslessly in the group attributes under ``rayspine``;
- ``crops.zarr/<scan_id>``: a ``(n_discs, 64, 64, 64)`` uint8 array, attribute ``levels`` giving each
  row's disc level; a disc row's ``crop_index`` is its row here;
- ``parts/<table>/<scan_id>.parquet``: per-scan rows, written once when the scan is done, so a re-run
  knows what is complete and the consolidated ``<table>.parquet`` never holds a row twice.
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


def part_path(out: str | Path, table: str, scan_id: str) -> Path:
    return Path(out) / "parts" / table / f"{scan_id}.parquet"


def completed_parts(out: str | Path, table: str) -> set[str]:
    folder = Path(out) / "parts" / table
    if not folder.is_dir():
        return set()
    return {p.name[: -len(".parquet")] for p in folder.glob("*.parquet") if not p.name.startswith(".")}


def consolidate_parts(out: str | Path, table: str, schema: pa.Schema) -> pa.Table:
    """Merge the per-scan parts into ``out/<table>.parquet`` (one row per part row, sorted)."""
    folder = Path(out) / "parts" / table
    paths = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.is_dir() else []
    tables = [pq.read_table(p) for p in paths]
    merged = pa.concat_tables([_conform(t, schema) for t in tables]) if tables else schema.empty_table()
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
