"""``OUT/report.html``: one self-contained page (figures inlined as base64 PNG) that opens offline.

It shows counts by status and site, per-site distributions of the disc geometry, mask overlays on
mid-sagittal slices for a sample of scans, and, when given, the training outputs (CV table, ROC,
latent traversal and correlation figures).
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..io.scans import ScanError, read_scan  # noqa: E402
from ..io.store import read_mask_zarr, write_text_atomic  # noqa: E402
from ..preprocess import to_canonical_orientation  # noqa: E402
from ..schema import ScanStatus, geometry_columns  # noqa: E402

log = logging.getLogger(__name__)
STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}img{max-width:100%}h2{border-bottom:1px solid #ddd;margin-top:2em}.bad{color:#a00}"""


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _png_file(path: Path) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" alt="{html.escape(path.name)}">'


def site_distributions(discs: pd.DataFrame):
    """One box plot per geometry column, one box per site, of the (measured) discs given."""
    sites = sorted(discs["site"].dropna().unique())
    columns = geometry_columns()
    ncols = 4
    nrows = -(-len(columns) // ncols)  # as many rows as the schema's columns need
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.5 * ncols, 3 * nrows), squeeze=False)
    for ax, column in zip(axes.flat, columns):
        ax.boxplot([discs.loc[discs["site"] == s, column].dropna() for s in sites], tick_labels=sites)
        ax.set_title(column, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def mask_overlay(image: np.ndarray, labels: np.ndarray, spacing, title: str):
    """Mid-sagittal slice (the slice with most disc voxels) with the disc labels over it, superior up."""
    x = int(np.argmax((labels > 0).sum(axis=(1, 2)))) if labels.any() else image.shape[0] // 2
    fig, ax = plt.subplots(figsize=(3, 4))
    extent = (0, image.shape[1] * spacing[1], 0, image.shape[2] * spacing[2])
    ax.imshow(image[x].T, cmap="gray", origin="lower", extent=extent)
    ax.imshow(np.ma.masked_equal(labels[x].T, 0), cmap="tab20", alpha=0.5, origin="lower", extent=extent, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    return fig


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0)


def write_report(out: Path, extras: dict[str, Path] | None = None, sample: int = 6) -> Path:
    out = Path(out)
    scans = pd.read_parquet(out / "scans.parquet")
    discs = pd.read_parquet(out / "discs.parquet")
    parts = [f"<h1>rayspine report</h1><p>{len(scans)} scans, {len(discs)} discs, output folder <code>{html.escape(str(out))}</code>.</p>"]

    parts.append("<h2>Scans by status and site</h2>")
    parts.append(_table(scans.pivot_table(index="site", columns="status", values="scan_id", aggfunc="count", fill_value=0).reset_index()))
    bad = scans[scans["status"] != ScanStatus.OK]
    if len(bad):
        parts.append('<h3 class="bad">Scans not scored</h3>' + _table(bad[["scan_id", "site", "status", "message"]]))
    timing = scans.filter(like="seconds_").describe().loc[["mean", "50%", "max"]].reset_index(names="stat")
    parts.append("<h3>Seconds per stage</h3>" + _table(timing))

    measured = discs[discs["status"] == "ok"]
    if len(measured):
        parts.append("<h2>Disc geometry by site</h2>" + _png(site_distributions(measured)))
        summary = measured.groupby("site")[geometry_columns()].median().reset_index()
        parts.append("<p>Medians by site:</p>" + _table(summary))
    elif len(discs):  # nothing to plot, and matplotlib cannot draw a box plot of nothing
        counts = ", ".join(f"{k}: {v}" for k, v in discs["status"].value_counts().items())
        parts.append(f'<h2>Disc geometry by site</h2><p class="bad">No disc passed its checks ({html.escape(counts)}).</p>')

    parts.append("<h2>Mask overlays (mid-sagittal)</h2>")
    parts.append("".join(_overlays(out, scans, sample)))

    for title, folder in (extras or {}).items():
        folder = Path(folder)
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for md in sorted(folder.glob("*.md")):
            parts.append(f"<pre>{html.escape(md.read_text())}</pre>")
        for png in sorted(folder.glob("*.png")):
            parts.append(f"<h3>{html.escape(png.stem)}</h3>{_png_file(png)}")

    page = f"<!doctype html><html><head><meta charset='utf-8'><title>rayspine report</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    return write_text_atomic(page, out / "report.html")


def _overlays(out: Path, scans: pd.DataFrame, sample: int) -> list[str]:
    ok = scans[scans["status"] == ScanStatus.OK]
    chosen = ok.groupby("site", group_keys=False).head(max(1, sample // max(1, ok["site"].nunique()))).head(sample)
    figures = []
    for row in chosen.itertuples():
        try:
            image = to_canonical_orientation(read_scan(row.path))
            labels = to_canonical_orientation(read_mask_zarr(out / "masks.zarr", row.scan_id))
        except (ScanError, FileNotFoundError, KeyError) as err:
            log.warning("no overlay for %s: %s", row.scan_id, err)
            continue
        figures.append(_png(mask_overlay(image.voxels, labels.voxels, image.spacing, f"{row.scan_id} ({row.site})")))
    return figures
