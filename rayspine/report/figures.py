"""Matplotlib figures: each a function that takes data (never paths) and returns a Figure.

The Agg backend is chosen here so figures render on headless workers and in tests. ``save`` writes a
figure atomically and closes it; the HTML report can instead embed the Figure returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

SLICE_NAMES = ("sagittal", "coronal", "transverse")


def save(fig: Figure, path: str | Path, dpi: int = 120, tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) via a temporary file, then close it.

    ``tight`` crops the figure to what it draws, at the cost of one more rendering (a sixth of a QC
    picture's time); a figure that lays itself out (``tight_layout``) does not need it."""
    from ..io.store import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip("."), dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return Path(path)


def roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "") -> Figure:
    """ROC curves, one per entry ``name -> (y_true, score)``, with each curve's AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, score) in curves.items():
        fpr, tpr, _ = roc_curve(y, score)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc_score(y, score):.2f})")
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    ax.set_title(title or "Disc narrowing, out-of-fold ROC")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def central_slices(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central sagittal, coronal and transverse slices of an ``[x, y, z]`` (LPS) volume, each oriented
    for display with ``origin="lower"``: sagittal (rows z up, columns y anterior->posterior), coronal
    (rows z up, columns x), transverse (rows y, columns x)."""
    cx, cy, cz = (s // 2 for s in volume.shape)
    return volume[cx, :, :].T, volume[:, cy, :].T, volume[:, :, cz].T


def traversal_montage(slices: np.ndarray, values: np.ndarray | None = None, gap: int = 2) -> Figure:
    """Montage of decoded discs: rows = latent features, columns = traversal steps, each cell the
    central sagittal | coronal | transverse slices side by side.

    ``slices`` is ``(k, steps, 3, H, W)``: ``central_slices`` of each decoded disc (probabilities or
    masks in [0, 1]); ``values`` ``(k, steps)``, when given, the latent value printed in each cell's
    corner. Drawn as one mosaic image (a single imshow), so a 64-feature sweep renders in seconds.
    """
    mosaic, (cell_h, cell_w) = montage_mosaic(slices, gap)
    k, steps = slices.shape[:2]
    width = min(2.0 + steps * 2.4, 30)
    fig, ax = plt.subplots(figsize=(width, max(2.0, width * mosaic.shape[0] / mosaic.shape[1])))
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")  # NaN gaps between cells
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([i * (cell_h + gap) + cell_h / 2 for i in range(k)], [f"z{i}" for i in range(k)])
    ax.set_xticks([j * (cell_w + gap) + cell_w / 2 for j in range(steps)], [f"step {j}" for j in range(steps)])
    ax.tick_params(length=0, labelsize=7)
    if values is not None:
        for i in range(k):
            for j in range(steps):
                ax.text(j * (cell_w + gap) + 1, i * (cell_h + gap) + 1, f"{values[i, j]:.2g}", color="yellow", fontsize=5, va="top")
    ax.set_title("Latent traversal: central " + " | ".join(SLICE_NAMES) + " slices (min -> max)", fontsize=9)
    for side in ax.spines.values():
        side.set_visible(False)
    return fig


def montage_mosaic(slices: np.ndarray, gap: int = 2) -> tuple[np.ndarray, tuple[int, int]]:
    """The montage as one 2-D image, top row first (for ``imshow`` with its default upper origin), NaN
    in the gaps; and the cell size. Each slice is flipped vertically so that superior (or posterior,
    for the transverse slice) is up, as ``central_slices`` orients them for a lower origin."""
    slices = np.asarray(slices, dtype=np.float32)
    k, steps, n, h, w = slices.shape
    cell_h, cell_w = h, n * w + (n - 1) * gap
    mosaic = np.full((k * (cell_h + gap) - gap, steps * (cell_w + gap) - gap), np.nan, dtype=np.float32)
    for i in range(k):
        for j in range(steps):
            for s in range(n):
                r0, c0 = i * (cell_h + gap), j * (cell_w + gap) + s * (w + gap)
                mosaic[r0 : r0 + h, c0 : c0 + w] = slices[i, j, s][::-1]
    return mosaic, (cell_h, cell_w)


def correlation_heatmap(table: pd.DataFrame, title: str = "") -> Figure:
    """Heatmap of Pearson r from a long table ``latent, feature, r, p`` (rows latents, columns features);
    cells with p < 0.05 carry a dot; undefined r (a constant feature) is left blank."""
    r = table.pivot(index="latent", columns="feature", values="r")
    p = table.pivot(index="latent", columns="feature", values="p")
    rows = list(dict.fromkeys(table["latent"]))
    cols = list(dict.fromkeys(table["feature"]))
    r, p = r.loc[rows, cols], p.loc[rows, cols]
    fig, ax = plt.subplots(figsize=(min(2 + 0.35 * len(cols), 30), min(1.5 + 0.3 * len(rows), 30)))
    image = ax.imshow(r.to_numpy(dtype=float), cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    sig = np.argwhere(p.to_numpy(dtype=float) < 0.05)
    if len(sig):
        ax.scatter(sig[:, 1], sig[:, 0], s=4, c="k", marker="o")
    # A line between the geometric and the latent columns (latent-latent block on the right).
    latent_cols = [n for n, c in enumerate(cols) if c in set(rows)]
    if latent_cols and latent_cols[0] > 0:
        ax.axvline(latent_cols[0] - 0.5, color="k", lw=1)
    fig.colorbar(image, ax=ax, label="Pearson r", shrink=0.8)
    ax.set_title((title or "Latent vs geometric and latent features") + " (dot: p < 0.05)", fontsize=9)
    return fig


def heldout_iou(summary: pd.DataFrame) -> Figure:
    """Held-out IoU against bottleneck size: the autoencoder beside PCA with as many components, 95 %
    intervals over people as bars, the nearest training disc and the mean shape as reference lines."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, marker in (("autoencoder", "o"), ("pca", "s")):
        rows = summary[summary["method"] == method].sort_values("bottleneck")
        if len(rows):
            err = [rows["iou"] - rows["iou_people_lo"], rows["iou_people_hi"] - rows["iou"]]
            ax.errorbar(rows["bottleneck"], rows["iou"], yerr=err, marker=marker, capsize=3, label=method)
    for method, style in (("nearest_iou", "--"), ("mean", ":")):
        rows = summary[summary["method"] == method]
        if len(rows):
            ax.axhline(float(rows["iou"].iloc[0]), ls=style, color="grey", label=method.replace("_iou", " training disc"))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bottleneck (latent size) / PCA components")
    ax.set_ylabel("IoU on people never seen")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def training_curves(histories: Mapping[int, pd.DataFrame], target: float | None = None) -> Figure:
    """Eval-mode training IoU per epoch of each bottleneck of a sweep (held-out IoU dashed when scored),
    the convergence target as a line: whether and when each size converges, at a glance."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, history in sorted(histories.items(), reverse=True):
        scored = history.dropna(subset=["train_iou"]) if "train_iou" in history else history.iloc[0:0]
        (line,) = ax.plot(scored["epoch"], scored["train_iou"], label=f"bottleneck {k}")
        if "heldout_iou" in history and history["heldout_iou"].notna().any():
            held = history.dropna(subset=["heldout_iou"])
            ax.plot(held["epoch"], held["heldout_iou"], ls="--", color=line.get_color(), alpha=0.7)
    if target is not None:
        ax.axhline(target, color="grey", ls=":", label=f"target {target:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("IoU, eval mode (dashed: held out)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig
