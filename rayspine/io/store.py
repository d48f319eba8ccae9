"""Zarr masks and crops, Parquet tables: every file appears atomically (write, then rename).

Layout of an output folder:
- ``masks.zarr``: a Zarr v3 hierarchy, its root group listing the scans (``rayspine.scans``); each
  ``masks.zarr/<scan_id>`` an OME-Zarr 0.5 label image (one writer each, one shard: three files), with
  the scan's spacing, origin and direction kept losslessly in the group attributes under ``rayspine``;
- ``crops.zarr``: the same kind of hierarchy, one group per block of scans (``<attempt>-<hash>``, three
  files for hundreds of discs): ``crops.zarr/<key>/crops`` a ``(n_discs, 64, 64, 64)`` uint8 array, its
  attributes ``levels`` and ``scan_ids`` giving each row's disc, a scan's crops in consecutive rows;
  a disc row's ``crop_index`` is its row among its scan's crops (``crop_locations`` finds the scan's
  group and first row; 0.1 and 0.2 wrote a group per scan, named by the scan id);
- ``parts/<table>/<name>.parquet``: the rows of one block of scans (0.1: of one scan), written when
  the block is done, so a re-run knows what is complete; ``io.outputs`` picks one row per scan when it
  consolidates them into ``<table>.parquet``, so that file never holds a row twice.
"""

from __future__ import annotations

import json
import os
import re
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
    """A staging folder for ``final`` outside its Zarr hierarchy (beside the root), on the same file system.

    Inside the root a half-written group would be listed as a member by any Zarr reader; here it is
    invisible until ``_publish`` renames it into place.
    """
    staging = final.parent.with_name(f".{final.parent.name}.staging")
    staging.mkdir(parents=True, exist_ok=True)
    return staging / f"{final.name}.tmp-{uuid.uuid4().hex[:8]}"


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    os.replace(tmp, final)


# --- Zarr v3 hierarchies -------------------------------------------------------------------------
# masks.zarr and crops.zarr are each one Zarr v3 hierarchy: a root group (``zarr.json``) whose attributes
# list its members under ``rayspine.scans`` (masks: one per scan; crops: one per block of scans). Every
# array is one shard (one writer per array, written once), so a member is three files: its group's
# zarr.json, the array's zarr.json, one shard. Output folders of 0.1 have no root group; their groups
# read the same.
ROOT_KINDS = {"masks.zarr": "masks", "crops.zarr": "crops"}
MASK_ARRAY = "0"
CROPS_ARRAY = "crops"
BLOCK_KEY = re.compile(r"\d+-[0-9a-f]{16}")  # a block's name (``io.outputs.block_name``): attempt, then a hash


def _root_metadata(kind: str, scans: list[str]) -> dict:
    return {"zarr_format": 3, "node_type": "group", "attributes": {"rayspine": {"kind": kind, "scans": scans}}}


def ensure_root_group(root: str | Path, kind: str | None = None) -> Path:
    """Make ``root`` a Zarr v3 group if it is not one yet (atomically; concurrent writers agree)."""
    root = Path(root)
    meta = root / "zarr.json"
    if not meta.exists():
        write_json_atomic(_root_metadata(kind or ROOT_KINDS.get(root.name, root.name), []), meta)
    return root


def refresh_root_group(root: str | Path) -> list[str]:
    """Rewrite the root group's scan list from the complete scan groups; returns the list.

    Called when a command finishes (scan writers run in parallel, so none of them keeps the list); also
    makes a 0.1 output folder's store a proper hierarchy. Staging leftovers of killed writers are removed.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    scans = sorted(written_groups(root))
    kind = ROOT_KINDS.get(root.name, root.name)
    meta = root / "zarr.json"
    if meta.exists():
        kind = json.loads(meta.read_text()).get("attributes", {}).get("rayspine", {}).get("kind", kind)
    write_json_atomic(_root_metadata(kind, scans), meta)
    staging = root.with_name(f".{root.name}.staging")
    if staging.is_dir():
        shutil.rmtree(staging, ignore_errors=True)
    return scans


def _shards(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    """One shard holding the whole array: each axis rounded up to a multiple of its chunk."""
    return tuple(max(c, -(-s // c) * c) for s, c in zip(shape, chunks))


def write_mask_zarr(root: str | Path, scan_id: str, mask: Volume, attrs: dict | None = None) -> Path:
    """Write one scan's label mask as an OME-Zarr 0.5 label image at ``root/scan_id``.

    The OME metadata (z, y, x axes in mm; scale = spacing, translation = origin) is what napari and other
    OME-Zarr viewers read; an oblique direction cannot be said in OME-Zarr 0.5, so the exact grid
    (spacing, origin, direction) is kept under ``rayspine.grid`` for ``read_mask_zarr`` and ``export``.
    """
    from .labels import spider_label_table

    root = ensure_root_group(root)
    final = root / scan_id
    tmp = _atomic_dir(final)
    group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
    # OME-Zarr orders spatial axes z, y, x; our arrays are [x, y, z].
    data = np.ascontiguousarray(mask.voxels.transpose(2, 1, 0).astype(np.uint8))
    chunks = _chunks(data.shape)
    array = group.create_array(MASK_ARRAY, shape=data.shape, dtype=data.dtype, chunks=chunks, shards=_shards(data.shape, chunks), dimension_names=("z", "y", "x"))
    array[...] = data
    present = set(np.flatnonzero(np.bincount(data.ravel(), minlength=256)).tolist()) - {0}
    table = [entry for entry in spider_label_table() if entry.value in present]
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
                                "path": MASK_ARRAY,
                                "coordinateTransformations": [
                                    {"type": "scale", "scale": [float(s) for s in mask.spacing[::-1]]},
                                    {"type": "translation", "translation": [float(o) for o in mask.origin[::-1]]},
                                ],
                            }
                        ],
                    }
                ],
                "image-label": {
                    "colors": [{"label-value": e.value, "rgba": [*e.rgb, 255]} for e in table],
                    "properties": [{"label-value": e.value, "name": e.name} for e in table],
                },
            },
            "rayspine": {"grid": mask.grid(), **(attrs or {})},
        }
    )
    _publish(tmp, final)
    return final


def read_mask_zarr(root: str | Path, scan_id: str) -> Volume:
    group = zarr.open_group(store=str(Path(root) / scan_id), mode="r")
    grid = group.attrs["rayspine"]["grid"]
    voxels = np.asarray(group[MASK_ARRAY][...]).transpose(2, 1, 0)
    return Volume(np.ascontiguousarray(voxels), tuple(grid["spacing"]), tuple(grid["origin"]), tuple(grid["direction"]))


def written_groups(root: str | Path) -> set[str]:
    """Names of the complete scan groups under a Zarr root (staging and temporary folders excluded)."""
    root = Path(root)
    if not root.is_dir():
        return set()
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


def write_crops_zarr(root: str | Path, key: str, crops: np.ndarray, levels: list[int], scan_ids: list[str] | None = None) -> Path:
    """Disc crops as the group ``root/key``: ``(n, s, s, s)`` uint8, row i the disc at ``levels[i]`` of
    scan ``scan_ids[i]`` (None: every row is of the scan named ``key``, the layout of 0.1 and 0.2)."""
    root = ensure_root_group(root)
    final = root / key
    tmp = _atomic_dir(final)
    group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
    crops = np.ascontiguousarray(crops, dtype=np.uint8)
    if crops.ndim == 4 and len(crops):
        chunks = (1, *crops.shape[1:])
        array = group.create_array(CROPS_ARRAY, shape=crops.shape, dtype=np.uint8, chunks=chunks, shards=_shards(crops.shape, chunks))
        array[...] = crops
    else:
        group.create_array(CROPS_ARRAY, shape=crops.shape, dtype=np.uint8)
    group.attrs["levels"] = [int(v) for v in levels]
    if scan_ids is not None:
        group.attrs["scan_ids"] = [str(s) for s in scan_ids]
    _publish(tmp, final)
    return final


def read_crops_group(root: str | Path, key: str) -> tuple[np.ndarray, list[int], list[str]]:
    """The crops of group ``key``, each row's level and each row's scan id."""
    group = zarr.open_group(store=str(Path(root) / key), mode="r")
    levels = list(group.attrs["levels"])
    return np.asarray(group[CROPS_ARRAY][...]), levels, list(group.attrs.get("scan_ids", [key] * len(levels)))


def crop_locations(root: str | Path) -> dict[str, tuple[str, int]]:
    """Where each scan's crops are: scan id -> (group, its first row in the group's array).

    A scan measured again (a resumed or retried run) is in the group of the latest attempt, the one its
    table rows come from; the per-scan groups of 0.1 and 0.2 (named by the scan) count as the oldest.
    """
    found: dict[str, tuple[int, str, int]] = {}
    for name in sorted(written_groups(root)):
        attrs = zarr.open_group(store=str(Path(root) / name), mode="r").attrs
        attempt = int(name.split("-")[0]) if BLOCK_KEY.fullmatch(name) else -1
        for row, scan_id in enumerate(attrs.get("scan_ids", [name] * len(attrs.get("levels", [])))):
            if scan_id not in found or attempt > found[scan_id][0]:
                found[scan_id] = (attempt, name, row)
    return {scan_id: (name, row) for scan_id, (_, name, row) in found.items()}


def read_disc_crops(root: str | Path, discs, locations: dict[str, tuple[str, int]] | None = None) -> np.ndarray:
    """The crop of each row of a discs table (``crop_index >= 0`` on every row), ``(len(discs), s, s, s)``.

    ``crop_index`` is the disc's row among its scan's crops, wherever the store keeps them
    (``crop_locations``, computed here unless given), so the tables do not depend on how a run's
    scans were cut into blocks.
    """
    root = Path(root)
    locations = crop_locations(root) if locations is None else locations
    scan_ids = discs["scan_id"].astype(str).to_numpy()
    index = discs["crop_index"].astype(int).to_numpy()
    missing = sorted(set(scan_ids) - set(locations))
    if missing:
        raise ValueError(f"{root}: no crops for scan {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    groups = np.asarray([locations[s][0] for s in scan_ids], dtype=object)
    rows = np.asarray([locations[s][1] for s in scan_ids]) + index
    crops = None
    for name in dict.fromkeys(groups):  # each group read once
        stored, _, owners = read_crops_group(root, name)
        mine = np.flatnonzero(groups == name)
        bad = [i for i in mine if index[i] < 0 or rows[i] >= len(owners) or owners[rows[i]] != scan_ids[i]]
        if bad:
            raise ValueError(f"{root / name}: scan {scan_ids[bad[0]]!r} has no crop {index[bad[0]]}")
        if crops is None:
            crops = np.zeros((len(discs), *stored.shape[1:]), np.uint8)
        crops[mine] = stored[rows[mine]]
    return crops if crops is not None else np.zeros((0, 0, 0, 0), np.uint8)


def drop_unreferenced_crops(root: str | Path, scans: set[str]) -> list[str]:
    """Remove the block groups (``<attempt>-<hash>``) that hold the crops of none of ``scans`` (the
    scans of the finished tables) by ``crop_locations``; returns their names.

    A killed run can have written a block's crops but not its rows, and the resumed run measures those
    scans again into a block of its own: the first copy is left behind, superseded. Groups named by a
    scan id (0.1, 0.2) are never removed here.
    """
    root = Path(root)
    used = {name for scan_id, (name, _) in crop_locations(root).items() if scan_id in scans}
    stale = sorted(name for name in written_groups(root) if BLOCK_KEY.fullmatch(name) and name not in used)
    for name in stale:
        shutil.rmtree(root / name, ignore_errors=True)
    return stale


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
