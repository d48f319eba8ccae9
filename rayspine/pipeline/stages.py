"""Thin Ray Data stage wrappers around the package's functions, one per step of the scoring graph.

Rows are plain dicts: ids, ``status``/``message``, per-stage seconds, the scan's own ``grid`` (the
written mask goes back onto it) and the arrays of the step at hand: the network's input ``voxels``
until segmentation, its ``logits`` until measurement, ``crops`` until encoding. Each stage drops the
arrays it no longer needs, so what flows downstream stays small. A scan that failed an earlier stage
passes through the later ones untouched, carrying its status to ``scans.parquet``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..config import Config
from ..io.cards import ModelCard
from ..io.outputs import write_scan_parts
from ..io.scans import ScanError, read_scan
from ..io.store import write_crops_zarr, write_mask_zarr
from ..schema import ScanStatus
from ..volume import Volume

EMPTY_3D = np.zeros((0, 0, 0), np.uint8)
EMPTY_CROPS = np.zeros((0, 0, 0, 0), np.uint8)


def _grid_of(volume: Volume) -> str:
    return json.dumps(volume.grid())


def _volume(voxels: np.ndarray, grid: str) -> Volume:
    g = json.loads(grid)
    return Volume(np.asarray(voxels), tuple(g["spacing"]), tuple(g["origin"]), tuple(g["direction"]))


def failed_scan(row: dict, status: str, message: str) -> dict:
    return {
        "scan_id": row["scan_id"],
        "patient_id": row.get("patient_id"),
        "site": row.get("site"),
        "image_path": row.get("image_path"),
        "status": status,
        "message": message,
        "n_discs": 0,
    }


def load_scan(row: dict, cfg: Config, seg_card: ModelCard) -> dict:
    """CPU: read and validate one scan (header first, then voxels), then make the segmenter's input.

    The row keeps the scan's own grid (``grid``, for the way back) and carries the network's input
    on the network's grid (``voxels``, ``net_grid``), so the model actor only runs the network.
    """
    from ..segment.infer import prepare_input

    started = time.perf_counter()
    try:
        volume = read_scan(row["image_path"], cfg.limits)
        prepared = prepare_input(seg_card, volume)
        row.update(status=ScanStatus.OK, message="", voxels=prepared.voxels, net_grid=_grid_of(prepared), grid=_grid_of(volume))
    except ScanError as err:
        row.update(status=err.status, message=err.reason, voxels=EMPTY_3D, net_grid="", grid="")
    row["seconds_load"] = time.perf_counter() - started
    return row


class SegmentScans:
    """Model actor: the segmenter is loaded once, then gives each scan's logits on the network's grid."""

    def __init__(self, model_dir: Path):
        import ray

        from ..segment.infer import Segmenter

        self.segmenter = Segmenter.load(model_dir)
        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""

    @staticmethod
    def card(model_dir: Path) -> ModelCard:
        """What the CPU tasks need to prepare the input and read the output: the model card."""
        from ..segment.infer import read_segmenter_card

        return read_segmenter_card(model_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        logits, seconds, nodes = [], [], []
        for i, status in enumerate(batch["status"]):
            started = time.perf_counter()
            if status == ScanStatus.OK:
                prepared = _volume(batch["voxels"][i], batch["net_grid"][i])
                logits.append(self.segmenter.logits(prepared).voxels.astype(np.float32))
                nodes.append(self.node_id)
            else:
                logits.append(EMPTY_3D)
                nodes.append("")
            seconds.append(time.perf_counter() - started)
        batch = {k: v for k, v in batch.items() if k != "voxels"}
        batch.update(logits=_ragged(logits), seconds_segment=np.asarray(seconds), node_id=np.asarray(nodes))
        return batch


def measure_and_store(row: dict, out: str, cfg: Config, seg_card: ModelCard) -> dict:
    """CPU: the mask on the scan's grid, disc instances and levels, the label mask and crops to Zarr, geometry rows."""
    from ..measure.scan import measure_mask, measured_count
    from ..segment.infer import mask_from_logits

    started = time.perf_counter()
    out = Path(out)
    logits = row.pop("logits", None)
    row.update(crops=EMPTY_CROPS, disc_rows="[]", n_discs=0)
    if row["status"] == ScanStatus.OK:
        grid = json.loads(row["grid"])
        scan_grid = _volume(np.zeros(grid["shape"], np.uint8), row["grid"])
        mask = mask_from_logits(seg_card, _volume(logits, row["net_grid"]), scan_grid)
        measured = measure_mask(mask, cfg, binary=True)
        write_mask_zarr(out / "masks.zarr", row["scan_id"], mask.with_voxels(measured.labels))
        write_crops_zarr(out / "crops.zarr", row["scan_id"], measured.crops, measured.levels)
        row.update(status=measured.status, message=measured.message, crops=measured.crops)
        row.update(disc_rows=json.dumps(measured.rows, default=float), n_discs=measured_count(measured.rows))
    row["seconds_measure"] = time.perf_counter() - started
    return row


class EncodeDiscs:
    """Model actor: the autoencoder is loaded once, then encodes each scan's disc crops."""

    def __init__(self, model_dir: Path):
        from ..autoencode.infer import load_autoencoder

        self.model = load_autoencoder(model_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        latents, seconds = [], []
        for crops in batch["crops"]:
            started = time.perf_counter()
            crops = np.asarray(crops)
            if crops.ndim == 4 and len(crops):
                latents.append(self.model.encode(crops).astype(np.float32))
            else:
                latents.append(np.zeros((0, self.model.bottleneck), np.float32))
            seconds.append(time.perf_counter() - started)
        batch = {k: v for k, v in batch.items() if k != "crops"}
        batch.update(latent=_ragged(latents), seconds_encode=np.asarray(seconds))
        return batch


def write_parts_row(row: dict, out: str) -> dict:
    """CPU: the scan's rows as Parquet parts; the ``scans`` part last, marking the scan complete."""
    latent = np.asarray(row["latent"]) if row.get("latent") is not None else None
    write_scan_parts(Path(out), {**row, "path": row.get("image_path")}, json.loads(row.get("disc_rows") or "[]"), latent)
    return {"scan_id": row["scan_id"], "status": row["status"], "n_discs": int(row.get("n_discs") or 0)}


def latent_dim(ae_dir: Path | None) -> int:
    if ae_dir is None:
        return 0
    from ..autoencode.infer import read_autoencoder_card

    return int(read_autoencoder_card(ae_dir)["bottleneck"])  # the card, not the weights


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """An object array of per-row arrays (Ray Data stores them as variable-shaped tensors)."""
    holder = np.empty(len(arrays), dtype=object)
    holder[:] = arrays
    return holder
