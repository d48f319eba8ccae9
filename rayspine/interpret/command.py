"""``rayspine interpret``: what the latent features encode, for a trained autoencoder and a discs table.

Writes ``traversal.parquet`` and ``traversal.png`` (each latent swept, decoded and measured),
``correlation.csv`` and ``correlation.png`` (latent x geometry and latent x latent: Pearson and
Spearman, p corrected for the number of tests), ``latent_summary.csv`` (what each latent tracks) and
``paper_claims.md`` / ``.json`` (the paper's step-2 and step-5 claims beside ours; the report shows it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..autoencode.infer import encode_table_crops, load_autoencoder, resolve_model_dir
from ..config import Config
from ..io.outputs import crop_frame_of
from ..io.store import write_json_atomic, write_parquet_atomic, write_text_atomic
from ..report import figures
from ..schema import USABLE_DISC_STATUSES, geometry_columns, latent_columns_of
from .claims import claims_markdown, paper_claims
from .correlation import correlation_table, latent_summary
from .traversal import measure_decoded, traversal_grid, traversal_table

log = logging.getLogger(__name__)


def run_interpret(ae: Path, features: Path, out: Path, cfg: Config) -> list[Path]:
    """Traversal and correlations for the autoencoder ``ae`` over the discs of ``features``.

    The latent codes come from ``features``' own ``z`` columns; when it has none (or a different number
    than the model's bottleneck) the discs are encoded from ``crops.zarr`` beside ``features``.
    Writes ``traversal.parquet``, ``traversal.png``, ``correlation.csv``, ``correlation.png``,
    ``latent_summary.csv`` and ``paper_claims.md`` / ``.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_autoencoder(Path(ae))
    discs = pd.read_parquet(features)
    if "status" in discs:
        discs = discs[discs["status"].isin(USABLE_DISC_STATUSES)]
    discs = discs.reset_index(drop=True)
    latent = latent_columns_of(discs.columns)
    if len(latent) != model.bottleneck or discs[latent].isna().any(axis=None):
        log.info("encoding the discs' crops: %s has %d latent columns, the model %d", features, len(latent), model.bottleneck)
        discs = discs.drop(columns=latent)
        if "crop_index" in discs:
            discs = discs[discs["crop_index"].fillna(-1) >= 0].reset_index(drop=True)
        made_in = crop_frame_of(Path(features).parent)
        if made_in != model.crop_frame:
            raise ValueError(f"{features}: its crops were made in the {made_in!r} frame, the autoencoder learnt {model.crop_frame!r} crops; measure with {{\"discs\": {{\"crop_frame\": \"{model.crop_frame}\"}}}}")
        codes = encode_table_crops(model, discs, Path(features).parent / "crops.zarr")
        latent = [f"z{i}" for i in range(model.bottleneck)]
        discs = pd.concat([discs, pd.DataFrame(codes, columns=latent)], axis=1)
    if discs.empty:
        raise ValueError(f"{features}: no usable discs to interpret")
    spacing = model.spacing if np.all(np.isfinite(model.spacing)) else cfg.grid.spacing_mm

    values, codes = traversal_grid(discs[latent].to_numpy(), cfg.interpret.points)
    k, points = values.shape
    geometry, slices = [], []
    for i in range(k):  # one latent at a time: k x points decoded 64^3 volumes would not fit comfortably
        decoded = model.decode(codes[i])
        geometry.append(measure_decoded(decoded, spacing))
        slices.append([np.stack(figures.central_slices(d)) for d in decoded])
    traversal = traversal_table(values, pd.concat(geometry, ignore_index=True))
    paths = [write_parquet_atomic(pa.Table.from_pandas(traversal, preserve_index=False), out / "traversal.parquet")]
    paths.append(figures.save(figures.traversal_montage(np.asarray(slices), values), out / "traversal.png"))

    geometric = [c for c in geometry_columns() if c in discs]
    correlations = correlation_table(discs, latent, geometric)
    paths.append(write_text_atomic(correlations.to_csv(index=False), out / "correlation.csv"))
    paths.append(write_text_atomic(latent_summary(correlations, geometric).to_csv(index=False), out / "latent_summary.csv"))
    paths.append(figures.save(figures.correlation_heatmap(correlations), out / "correlation.png"))

    sweep = sweep_table_of(Path(ae))  # convergence claims only for a model trained by a sweep
    claims = paper_claims(correlations, pd.read_csv(sweep) if sweep else None)
    paths.append(write_json_atomic({**claims, "bottleneck_interpreted": model.bottleneck, "discs": len(discs), "crop_frame": model.crop_frame}, out / "paper_claims.json"))
    frame = ", crops tilt-aligned (`discs.crop_frame` disc_plane)" if model.crop_frame == "disc_plane" else ""
    paths.append(write_text_atomic(f"Bottleneck {model.bottleneck}, {len(discs)} discs{frame}.\n\n" + claims_markdown(claims, f"{len(discs)} discs"),
                                   out / "paper_claims.md"))
    return paths


def sweep_table_of(ae: Path) -> Path | None:
    """The ``sweep.csv`` of the sweep an autoencoder came from (``ae`` is the sweep or one of its
    ``bn<k>`` folders), or None."""
    for folder in (ae, resolve_model_dir(ae).parent):
        if (folder / "sweep.csv").is_file():
            return folder / "sweep.csv"
    return None
