"""Latent columns for a measured discs table: encode its crops with a trained autoencoder.

``rayspine run`` encodes as it streams; this is for tables made by ``rayspine measure`` (features
from ground-truth masks), whose crops are already in ``crops.zarr``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..io.store import write_parquet_atomic
from ..schema import discs_schema, latent_columns, latent_columns_of
from .infer import encode_table_crops, load_autoencoder


def add_latent(measured: Path, ae_dir: Path) -> Path:
    """Rewrite ``measured/discs.parquet`` with ``z0..z{k-1}`` from its crops (rows without a crop get nulls)."""
    model = load_autoencoder(ae_dir)
    path = Path(measured) / "discs.parquet"
    table = pq.read_table(path)
    discs = table.to_pandas().drop(columns=latent_columns_of(table.column_names))
    latent = encode_table_crops(model, discs, Path(measured) / "crops.zarr")
    discs = pd.concat([discs, pd.DataFrame(latent, columns=latent_columns(model.bottleneck), index=discs.index)], axis=1)
    metadata = {**(table.schema.metadata or {}), b"ae_model": str(ae_dir).encode()}
    schema = discs_schema(model.bottleneck, metadata)
    write_parquet_atomic(pa.Table.from_pandas(discs.reindex(columns=schema.names), schema=schema, preserve_index=False), path)
    return path
