"""Latent columns for a measured discs table: encode its crops with a trained autoencoder.

``rayspine run`` encodes as it streams; this is for tables made by ``rayspine measure`` (features
from ground-truth masks), whose crops are already in ``crops.zarr``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .io.store import read_crops_zarr, write_parquet_atomic
from .schema import discs_schema, latent_columns, latent_columns_of


def add_latent(measured: Path, ae_dir: Path) -> Path:
    """Rewrite ``measured/discs.parquet`` with ``z0..z{k-1}`` from its crops (rows without a crop get nulls)."""
    import pandas as pd

    from .ae_model import load_autoencoder

    model = load_autoencoder(ae_dir)
    path = Path(measured) / "discs.parquet"
    table = pq.read_table(path)
    discs = table.to_pandas().drop(columns=latent_columns_of(table.column_names))
    latent = np.full((len(discs), model.bottleneck), np.nan, np.float32)
    for scan_id, rows in discs[discs["crop_index"] >= 0].groupby("scan_id"):
        crops, _ = read_crops_zarr(Path(measured) / "crops.zarr", scan_id)
        latent[rows.index] = model.encode(crops[rows["crop_index"].to_numpy()])
    discs = pd.concat([discs, pd.DataFrame(latent, columns=latent_columns(model.bottleneck), index=discs.index)], axis=1)
    metadata = {**(table.schema.metadata or {}), b"ae_model": str(ae_dir).encode()}
    schema = discs_schema(model.bottleneck, metadata)
    write_parquet_atomic(pa.Table.from_pandas(discs.reindex(columns=schema.names), schema=schema, preserve_index=False), path)
    return path
