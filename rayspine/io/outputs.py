"""Output folders of the scoring commands (``measure``, ``run``): one guard, one marker, one writer.

An output folder belongs to one command. Its marker ``<command>.json`` records the config digest it
was made with, so a re-run resumes only with the same settings and never mixes two configs' rows.

Rows leave in blocks: ``parts/discs/<name>.parquet`` then ``parts/scans/<name>.parquet`` for a block
of scans (a few hundred), each file atomically, each row carrying its scan's ``part_key`` and the
run's ``attempt``. A scan is complete once its ``scans`` row exists; an interrupted run redoes the
others. ``finish_tables`` keeps one ``scans`` row per scan (the latest attempt) and the disc rows of
that same part, so nothing a killed or retried write left behind is ever counted twice, and joins the
gradings then, so new gradings need no re-measuring; then it compacts the parts into one per table. 0.1's per-scan parts (no ``part_key``) still read.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..config import DiscConfig
from ..schema import LABEL_COLUMN, SCANS_SCHEMA, ScanStatus, discs_schema, latent_columns
from .gradings import join_narrowing
from .store import completed_parts, consolidate_parts, drop_unreferenced_crops, part_path, read_parts, write_crops_zarr, write_json_atomic, write_parquet_atomic

# What each command writes; --overwrite removes these and nothing else.
OUTPUTS = {
    "measure": ("index", "parts", "crops.zarr", "discs.parquet", "scans.parquet", "report.html", "report.json", "qc"),
    "run": ("index", "masks.zarr", "crops.zarr", "parts", "discs.parquet", "scans.parquet", "report.html", "report.json", "qc", "report_files"),
}

# Columns a part row carries beyond its table's: which scan it is, and which run wrote it.
PART_FIELDS = (pa.field("part_key", pa.string()), pa.field("attempt", pa.int64()))
# Statuses a re-run scores again only when asked (``--retry-failed``); ok and no_discs are results.
FAILED_STATUSES = frozenset({ScanStatus.ERROR, ScanStatus.UNREADABLE, ScanStatus.BAD_HEADER, ScanStatus.BAD_VOXELS, ScanStatus.GRID_MISMATCH})
INDEX_SCHEMA = pa.schema([(name, pa.string()) for name in ("scan_id", "patient_id", "site", "image_path", "mask_path", "status", "message", "part_key")])


def claim_output(out: Path, command: str, cfg, overwrite: bool = False, **details) -> None:
    """Make ``out`` this command's output folder, or refuse.

    An empty or missing folder is claimed; a previous output of the same command with the same config
    is resumed; ``overwrite`` removes the command's own outputs first (and nothing else). Without it,
    anything else (a folder of other files, another config) is refused with a message that says what to do.
    """
    out = Path(out)
    marker = out / f"{command}.json"
    if overwrite:
        for name in (*OUTPUTS[command], marker.name):  # only this command's outputs, never anything else
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    elif out.exists() and any(out.iterdir()):
        if not marker.exists():
            raise FileExistsError(f"{out} is not empty and not a previous `{command}` output: choose another folder (or --overwrite)")
        previous = _marker_digest(json.loads(marker.read_text()))
        if previous != cfg.digest():
            raise FileExistsError(f"{out} was made with another config ({previous}); use --overwrite to start again")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"command": command, "config": cfg.digest(), "settings": cfg.to_dict(), **details}, marker)


def crop_frame_of(folder: Path) -> str:
    """The frame (``DiscConfig.crop_frame``) in which a ``measure`` or ``run`` output made its crops,
    from its marker's settings; "scan" for outputs of versions that had no other."""
    for command in OUTPUTS:
        marker = Path(folder) / f"{command}.json"
        if marker.is_file():
            return str(json.loads(marker.read_text()).get("settings", {}).get("discs", {}).get("crop_frame", DiscConfig().crop_frame))
    return DiscConfig().crop_frame


def _marker_digest(marker: dict) -> str | None:
    config = marker.get("config")
    if isinstance(config, dict):  # 0.1's run.json held the settings themselves
        from ..config import Config

        return Config.from_dict(config).digest()
    return config


def part_key(scan: dict) -> str:
    """The file name of a scan's parts: its id, or for an unusable id a stable key from its path."""
    if scan.get("status", ScanStatus.OK) == ScanStatus.BAD_ID:
        source = scan.get("image_path") or scan.get("mask_path") or scan.get("path") or scan["scan_id"]
        return "bad-id-" + hashlib.sha1(str(source).encode()).hexdigest()[:16]
    return scan["scan_id"]


def new_attempt() -> int:
    """This run's attempt number: later runs' rows win over earlier ones for the same scan."""
    return time.time_ns()


def write_index(out: Path, scans: list[dict], block_scans: int = 200, first_blocks: tuple[int, ...] = (1, 5, 25)) -> Path:
    """The scans still to do as Parquet files under ``out/index/``, one file per block that Ray Data reads.

    Blocks hold ``block_scans`` scans, after a few small ones first, so the first scan's rows come out in
    seconds rather than after a whole block. The driver hands Ray a folder, not a list of scans.
    """
    folder = Path(out) / "index"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    records = [{**{k: _text_or_none(row.get(k)) for k in INDEX_SCHEMA.names}, "part_key": part_key(row)} for row in scans]
    start, n = 0, 0
    for size in (*first_blocks, *[block_scans] * (len(records) // max(1, block_scans) + 1)):
        if start >= len(records):
            break
        size = min(size, block_scans)
        chunk = records[start : start + size]
        write_parquet_atomic(pa.Table.from_pylist(chunk, schema=INDEX_SCHEMA), folder / f"{n:06d}.parquet")
        start, n = start + size, n + 1
    return folder


def latest_scan_rows(out: Path) -> pa.Table:
    """One ``scans`` part row per scan: the latest attempt's (0.1's parts: attempt 0, key = file name)."""
    rows = read_parts(completed_parts(out, "scans"), _part_schema(SCANS_SCHEMA))
    rows = rows.set_column(rows.schema.get_field_index("part_key"), "part_key", pc.coalesce(rows["part_key"], rows["part_file"]))
    rows = rows.set_column(rows.schema.get_field_index("attempt"), "attempt", pc.fill_null(rows["attempt"], 0))
    if rows.num_rows == 0:
        return rows
    order = pd.DataFrame({"key": rows["part_key"].to_numpy(zero_copy_only=False), "attempt": rows["attempt"].to_numpy(),
                          "file": rows["part_file"].to_numpy(zero_copy_only=False)})
    keep = order.sort_values(["key", "attempt", "file"]).drop_duplicates("key", keep="last").index.to_numpy()
    return rows.take(pa.array(np.sort(keep)))


def done_keys(out: Path, retry_failed: bool = False) -> set[str]:
    """Keys of the scans a re-run skips: every scan with a row, or with ``retry_failed`` those that did not fail."""
    rows = latest_scan_rows(out)
    keys, statuses = rows["part_key"].to_pylist(), rows["status"].to_pylist()
    return {k for k, s in zip(keys, statuses) if not (retry_failed and s in FAILED_STATUSES)}


def failure(stage: str, err: BaseException) -> dict:
    """The status fields of a scan that raised ``err`` in ``stage``: one row, not a failed run."""
    return {"status": ScanStatus.ERROR, "message": f"{stage}: {type(err).__name__}: {err}"[:1000], "error_stage": stage, "error_type": type(err).__name__}


def _part_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([*schema.remove_metadata(), *PART_FIELDS])


def _text_or_none(value) -> str | None:
    """Ids and messages as text; a missing value (None, NaN) as null, never an Arrow type error."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def scan_row(scan: dict) -> dict:
    """A ``scans.parquet`` row from what is known of a scan, coerced to the schema's types."""
    row = {name: scan.get(name) for name in SCANS_SCHEMA.names}
    for name in ("scan_id", "patient_id", "site", "path", "status", "message", "node_id", "error_stage", "error_type"):
        row[name] = _text_or_none(row[name])
    row["scan_id"] = row["scan_id"] or ""
    row["error_stage"], row["error_type"] = row["error_stage"] or None, row["error_type"] or None
    row["status"] = row["status"] or ScanStatus.OK
    row["n_discs"] = int(row.get("n_discs") or 0)
    for name in ("seconds_load", "seconds_segment", "seconds_measure", "seconds_encode"):
        row[name] = _float_or_none(row[name])
    return row


def _float_or_none(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def write_block_parts(out: Path, scans: list[dict], attempt: int) -> str:
    """A block of scans' disc rows, then their scan rows, as one part per table; returns the part's name.

    Each scan holds ``scan_id, patient_id, site, path, status, message, n_discs``, the per-stage seconds,
    ``disc_rows`` (one dict per disc: level, status, message, geometry, crop_index) and ``latent`` (an
    ``(n_discs, k)`` array or None). A scan whose rows do not fit the schema becomes an ``error`` row
    (stage ``write``) instead of failing the block. The name follows from the attempt and the scans, so
    a write that Ray retries replaces its own files.
    """
    out = Path(out)
    scan_rows, disc_tables = [], []
    for scan in scans:
        key = part_key(scan)
        try:
            row, discs = scan_row(scan), _disc_table(scan)
        except Exception as err:  # noqa: BLE001 - one scan's bad values cost that scan, not the block
            row, discs = scan_row({**{k: scan.get(k) for k in ("scan_id", "patient_id", "site", "path")}, **failure("write", err)}), None
        scan_rows.append({**row, "part_key": key, "attempt": attempt})
        if discs is not None and discs.num_rows:
            disc_tables.append(discs.append_column("part_key", pa.array([key] * discs.num_rows, pa.string())).append_column(
                "attempt", pa.array([attempt] * discs.num_rows, pa.int64())))
    name = block_name([r["part_key"] for r in scan_rows], attempt)
    discs = pa.concat_tables(disc_tables, promote_options="default") if disc_tables else _part_schema(discs_schema(0)).empty_table()
    write_parquet_atomic(discs, part_path(out, "discs", name))
    write_parquet_atomic(pa.Table.from_pylist(scan_rows, schema=_part_schema(SCANS_SCHEMA)), part_path(out, "scans", name))
    return name


def block_name(keys: list[str], attempt: int) -> str:
    """The name of what one block writes (its parts, its crops): the attempt and a hash of its scans'
    keys, so a write that Ray retries replaces its own files and two blocks never share a name."""
    return f"{attempt}-{hashlib.sha1(chr(10).join(keys).encode()).hexdigest()[:16]}"


def write_block_crops(out: Path, scans: list[dict], attempt: int) -> str | None:
    """The disc crops of a block of scans as one group, ``crops.zarr/<block_name>``; returns its name.

    Each scan dict holds its ``crops`` (``(n, s, s, s)``) and their ``levels``; its disc rows keep their
    ``crop_index`` (the row among the scan's own crops), so the tables are the same however the scans
    were cut into blocks. A store of hundreds of scans is then a few files per block, not three per scan.
    """
    with_crops = [scan for scan in scans if len(scan.get("crops", ()))]
    if not with_crops:
        return None
    name = block_name([part_key(scan) for scan in with_crops], attempt)
    ids = [str(scan["scan_id"]) for scan in with_crops for _ in range(len(scan["crops"]))]
    levels = [int(level) for scan in with_crops for level in scan["levels"]]
    write_crops_zarr(Path(out) / "crops.zarr", name, np.concatenate([scan["crops"] for scan in with_crops]), levels, ids)
    return name


def _disc_table(scan: dict) -> pa.Table:
    """A scan's disc rows with its ids and latent columns, in the discs schema."""
    row = scan_row(scan)
    discs = pd.DataFrame(list(scan.get("disc_rows") or []))
    latent = scan.get("latent")
    latent = np.asarray(latent) if latent is not None else None
    k = latent.shape[1] if latent is not None and latent.ndim == 2 and latent.shape[0] == len(discs) and len(discs) else 0
    if len(discs):
        for name in ("scan_id", "patient_id", "site"):
            discs[name] = row[name]
        for j, name in enumerate(latent_columns(k)):
            discs[name] = latent[:, j]
    schema = discs_schema(k)
    return pa.Table.from_pandas(discs.reindex(columns=schema.names), schema=schema, preserve_index=False)


def finish_tables(
    out: Path, latent_dim: int, metadata: dict[str, str], labels: pd.DataFrame | None, min_level_confidence: float = DiscConfig().min_level_confidence
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``scans.parquet`` and ``discs.parquet`` from the parts, the narrowing grades joined (not to discs
    whose level is doubtful: ``io.gradings.join_narrowing``); both returned.

    One scan row per scan (``latest_scan_rows``), and only the disc rows written with it: a killed
    run's disc part without its scans part, or an earlier attempt's rows, are left out.
    """
    out = Path(out)
    scan_rows = latest_scan_rows(out)
    winners = pc.binary_join_element_wise(scan_rows["part_key"], scan_rows["part_file"], "\x1f")
    scans = consolidate_parts(out, "scans", scan_rows, SCANS_SCHEMA.with_metadata(metadata)).to_pandas()
    schema = discs_schema(latent_dim, metadata)
    disc_rows = read_parts(completed_parts(out, "discs"), _part_schema(schema))
    if disc_rows.num_rows:
        key = pc.coalesce(disc_rows["part_key"], disc_rows["part_file"])  # 0.1's parts: the file is the key
        disc_rows = disc_rows.set_column(disc_rows.schema.get_field_index("part_key"), "part_key", key)
        disc_rows = disc_rows.filter(pc.is_in(pc.binary_join_element_wise(key, disc_rows["part_file"], "\x1f"), value_set=winners))
    discs = consolidate_parts(out, "discs", disc_rows, schema).to_pandas()
    compact_parts(out, scan_rows, disc_rows)
    drop_unreferenced_crops(out / "crops.zarr", set(scans["scan_id"]))
    if labels is not None:
        discs[LABEL_COLUMN] = join_narrowing(discs, labels, min_level_confidence)
        table = pa.Table.from_pandas(discs, schema=schema.remove_metadata(), preserve_index=False).replace_schema_metadata(schema.metadata)
        write_parquet_atomic(table, out / "discs.parquet")
    return scans, discs


def compact_parts(out: Path, scan_rows: pa.Table, disc_rows: pa.Table) -> None:
    """Replace the parts of each table by one part holding the rows just consolidated.

    A run writes a part per block (more where Ray split a block by bytes), and every resume adds its own;
    left alone, an archive's parts would grow to thousands of small files that the next resume lists and
    reads. Written discs first, then scans, then the old parts removed: a kill at any point leaves parts
    from which ``finish_tables`` picks the same rows (a scan's row and its discs always from one file).
    """
    old = completed_parts(out, "scans") + completed_parts(out, "discs")
    if len(old) <= 2:
        return
    name = f"compacted-{new_attempt()}"
    for table, rows in (("discs", disc_rows), ("scans", scan_rows)):
        write_parquet_atomic(rows.drop_columns(["part_file"]), part_path(out, table, name))
    for path in old:
        path.unlink(missing_ok=True)


def scan_statuses(part: Path) -> list[tuple[str, str]]:
    """(scan_id, status) of each row of one ``scans`` part: what a progress line counts."""
    import pyarrow.parquet as pq

    table = pq.read_table(part, columns=["scan_id", "status"])
    return list(zip(table["scan_id"].to_pylist(), table["status"].to_pylist()))
