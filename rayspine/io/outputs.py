"""Output folders of the scoring commands (``measure``, ``run``): one guard, one marker, one writer.

An output folder belongs to one command. Its marker ``<command>.json`` records the config digest it
was made with, so a re-run resumes only with the same settings and never mixes two configs' rows.

Per-scan rows are written as Parquet parts, ``parts/discs/<key>.parquet`` then
``parts/scans/<key>.parquet``, each atomically; the ``scans`` part marks the scan complete, so an
interrupted run redoes exactly the unfinished scans. ``finish_tables`` consolidates the parts into
``discs.parquet`` and ``scans.parquet`` (one row per part row, never twice) and joins the gradings
then, so new gradings need no re-measuring.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config import DiscConfig
from ..schema import LABEL_COLUMN, SCANS_SCHEMA, ScanStatus, discs_schema, latent_columns
from .gradings import join_narrowing
from .store import completed_parts, consolidate_parts, part_path, write_json_atomic, write_parquet_atomic

# What each command writes; --overwrite removes these and nothing else.
OUTPUTS = {
    "measure": ("parts", "crops.zarr", "discs.parquet", "scans.parquet", "report.html", "report.json", "qc"),
    "run": ("masks.zarr", "crops.zarr", "parts", "discs.parquet", "scans.parquet", "report.html", "report.json", "qc", "report_files"),
}


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


def done_keys(out: Path) -> set[str]:
    """Keys of the scans whose outputs are complete."""
    return completed_parts(out, "scans")


def _text_or_none(value) -> str | None:
    """Ids and messages as text; a missing value (None, NaN) as null, never an Arrow type error."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def scan_row(scan: dict) -> dict:
    """A ``scans.parquet`` row from what is known of a scan, coerced to the schema's types."""
    row = {name: scan.get(name) for name in SCANS_SCHEMA.names}
    for name in ("scan_id", "patient_id", "site", "path", "status", "message", "node_id"):
        row[name] = _text_or_none(row[name])
    row["scan_id"] = row["scan_id"] or ""
    row["status"] = row["status"] or ScanStatus.OK
    row["n_discs"] = int(row.get("n_discs") or 0)
    return row


def write_scan_parts(out: Path, scan: dict, disc_rows: list[dict], latent: np.ndarray | None = None) -> None:
    """One scan's disc rows (with its ids and latent columns) and then its scan row, as parts.

    ``scan`` holds ``scan_id, patient_id, site, path, status, message, n_discs`` and the per-stage
    seconds; ``disc_rows`` one dict per disc (level, status, message, geometry, crop_index);
    ``latent`` an ``(n_discs, k)`` array or None.
    """
    out = Path(out)
    key = part_key(scan)
    row = scan_row(scan)
    discs = pd.DataFrame(disc_rows)
    k = latent.shape[1] if latent is not None and latent.ndim == 2 and latent.shape[0] == len(discs) else 0
    if len(discs):
        for name in ("scan_id", "patient_id", "site"):
            discs[name] = row[name]
        for j, name in enumerate(latent_columns(k)):
            discs[name] = latent[:, j]
    schema = discs_schema(k)
    table = pa.Table.from_pandas(discs.reindex(columns=schema.names), schema=schema, preserve_index=False)
    write_parquet_atomic(table, part_path(out, "discs", key))
    write_parquet_atomic(pa.Table.from_pylist([row], schema=SCANS_SCHEMA), part_path(out, "scans", key))


def finish_tables(
    out: Path, latent_dim: int, metadata: dict[str, str], labels: pd.DataFrame | None, min_level_confidence: float = DiscConfig().min_level_confidence
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``scans.parquet`` and ``discs.parquet`` from the parts, the narrowing grades joined (not to discs
    whose level is doubtful: ``io.gradings.join_narrowing``); both returned."""
    out = Path(out)
    scans = consolidate_parts(out, "scans", SCANS_SCHEMA.with_metadata(metadata)).to_pandas()
    schema = discs_schema(latent_dim, metadata)
    discs = consolidate_parts(out, "discs", schema).to_pandas()
    if labels is not None:
        discs[LABEL_COLUMN] = join_narrowing(discs, labels, min_level_confidence)
        table = pa.Table.from_pandas(discs, schema=schema.remove_metadata(), preserve_index=False).replace_schema_metadata(schema.metadata)
        write_parquet_atomic(table, out / "discs.parquet")
    return scans, discs
