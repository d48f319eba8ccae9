"""Thin Ray Data stage wrappers around the package's functions, one per step of the scoring graph.

Rows are plain dicts: ids, ``status``/``message``, per-stage seconds, the scan's own ``grid`` (the
written mask goes back onto it) and the arrays of the step at hand: the network's input ``voxels``
until segmentation, its ``logits`` until measurement, ``crops`` until encoding. Each stage drops the
arrays it no longer needs, so what flows downstream stays small. A scan that failed an earlier stage
passes through the later ones untouched, carrying its status to ``scans.parquet``.

One failure is one row: an exception while scoring one scan becomes that scan's status ``error``
(with the stage and the exception) and the block goes on. Only the death of a worker or a node
escapes, to Ray's retries. ``fail_at`` ({stage: scan_id}) raises on purpose, for the fault tests.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import inject_fault
from ..io.cards import ModelCard
from ..io.outputs import failure, write_block_crops, write_block_parts
from ..io.scans import ScanError, read_scan
from ..io.store import write_mask_zarr
from ..schema import ScanStatus
from ..volume import Volume

# Rows of one block share each column's dtype (Ray Data makes a column of them): the empty stand-ins
# of a failed scan have the dtype of the real arrays.
EMPTY_3D = np.zeros((0, 0, 0), np.float32)
EMPTY_CROPS = np.zeros((0, 0, 0, 0), np.uint8)


def _grid_of(volume: Volume) -> str:
    return json.dumps(volume.grid())


def _volume(voxels: np.ndarray, grid: str) -> Volume:
    g = json.loads(grid)
    return Volume(np.asarray(voxels), tuple(g["spacing"]), tuple(g["origin"]), tuple(g["direction"]))


def load_scan(row: dict, cfg: Config, seg_card: ModelCard, fail_at: dict | None = None) -> dict:
    """CPU: read and validate one scan (header first, then voxels), then make the segmenter's input.

    The row keeps the scan's own grid (``grid``, for the way back) and carries the network's input
    on the network's grid (``voxels``, ``net_grid``), so the model actor only runs the network.
    """
    from ..segment.infer import prepare_input

    started = time.perf_counter()
    row.update(error_stage="", error_type="")
    try:
        inject_fault(fail_at, "load", row["scan_id"])
        volume = read_scan(row["image_path"], cfg.limits)
        prepared = prepare_input(seg_card, volume)
        row.update(status=ScanStatus.OK, message="", voxels=prepared.voxels.astype(np.float32, copy=False), net_grid=_grid_of(prepared), grid=_grid_of(volume))
    except ScanError as err:
        row.update(status=err.status, message=err.reason, voxels=EMPTY_3D, net_grid="", grid="")
    except Exception as err:  # noqa: BLE001 - one scan's failure is its row, not the run's end
        row.update(**failure("load", err), voxels=EMPTY_3D, net_grid="", grid="")
    row["seconds_load"] = time.perf_counter() - started
    return row


class SegmentScans:
    """Model actor: the segmenter is loaded once, then gives each scan's logits on the network's grid."""

    def __init__(self, model_dir: Path, precision: str = "auto"):
        import ray

        from ..segment.infer import Segmenter

        self.segmenter = Segmenter.load(model_dir, precision=precision)
        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        # Warm before the first batch (Ray Data sends none until the actor is constructed): one patch
        # through the network pays torch's first-call costs (kernels, allocator, autotuning) here.
        patch = tuple(int(s) for s in self.segmenter.card["patch_size"])
        self.segmenter.logits(Volume(np.zeros(patch, np.float32), (1.0, 1.0, 1.0)))

    @staticmethod
    def card(model_dir: Path) -> ModelCard:
        """What the CPU tasks need to prepare the input and read the output: the model card."""
        from ..segment.infer import read_segmenter_card

        return read_segmenter_card(model_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        logits, seconds, nodes = [], [], []
        status, message, stage, kind = (list(batch[k]) for k in ("status", "message", "error_stage", "error_type"))
        for i in range(len(status)):
            started = time.perf_counter()
            logits.append(EMPTY_3D)
            nodes.append("")
            if status[i] == ScanStatus.OK:
                try:
                    inject_fault(getattr(self, "fail_at", None), "segment", batch["scan_id"][i])
                    prepared = _volume(batch["voxels"][i], batch["net_grid"][i])
                    logits[i] = self.segmenter.logits(prepared).voxels.astype(np.float32)
                    nodes[i] = self.node_id
                except Exception as err:  # noqa: BLE001 - that scan's error row; a dead actor still goes to Ray
                    failed = failure("segment", err)
                    status[i], message[i], stage[i], kind[i] = failed["status"], failed["message"], failed["error_stage"], failed["error_type"]
            seconds.append(time.perf_counter() - started)
        batch = {k: v for k, v in batch.items() if k != "voxels"}
        batch.update(logits=_ragged(logits), seconds_segment=np.asarray(seconds), node_id=np.asarray(nodes, dtype=object))
        batch.update(status=_texts(status), message=_texts(message), error_stage=_texts(stage), error_type=_texts(kind))
        return batch


def measure_and_store(batch: dict[str, np.ndarray], out: str, cfg: Config, seg_card: ModelCard, attempt: int, keep_crops: bool = False,
                      fail_at: dict | None = None) -> dict[str, np.ndarray]:
    """CPU, a block of scans: each one's mask on its own grid, disc instances and levels, the label mask
    to Zarr and its geometry rows; then the block's crops as one Zarr group (``io.outputs.write_block_crops``).

    The crops travel on only to an encoder (``keep_crops``); otherwise the rows leave with their table
    values alone, small enough that a block of hundreds of scans is one write.
    """
    from ..measure.scan import measure_mask, measured_count
    from ..segment.infer import mask_from_logits

    status, message, stage, kind = (list(batch[k]) for k in ("status", "message", "error_stage", "error_type"))
    scans, seconds = [], []
    for i, scan_id in enumerate(batch["scan_id"]):
        started = time.perf_counter()
        scan = {"scan_id": scan_id, "disc_rows": [], "crops": EMPTY_CROPS, "levels": []}
        step = "mask"
        if status[i] == ScanStatus.OK:
            try:
                inject_fault(fail_at, "mask", scan_id)
                grid = json.loads(batch["grid"][i])
                scan_grid = _volume(np.zeros(grid["shape"], np.uint8), batch["grid"][i])
                mask = mask_from_logits(seg_card, _volume(batch["logits"][i], batch["net_grid"][i]), scan_grid)
                step = "measure"
                inject_fault(fail_at, "measure", scan_id)
                measured = measure_mask(mask, cfg, binary=True)
                step = "store"
                inject_fault(fail_at, "store", scan_id)
                write_mask_zarr(Path(out) / "masks.zarr", scan_id, mask.with_voxels(measured.labels))
                status[i], message[i] = measured.status, measured.message
                scan.update(disc_rows=measured.rows, crops=measured.crops, levels=measured.levels)
            except Exception as err:  # noqa: BLE001 - one scan's failure is its row, not the block's end
                failed = failure(step, err)
                status[i], message[i], stage[i], kind[i] = failed["status"], failed["message"], failed["error_stage"], failed["error_type"]
        scans.append(scan)
        seconds.append(time.perf_counter() - started)
    started = time.perf_counter()
    try:
        write_block_crops(Path(out), scans, attempt)
    except Exception as err:  # noqa: BLE001 - the scans whose crops were lost are error rows, the rest stand
        failed = failure("store", err)
        for i, scan in enumerate(scans):
            if len(scan["crops"]):
                status[i], message[i], stage[i], kind[i] = failed["status"], failed["message"], failed["error_stage"], failed["error_type"]
                scan.update(disc_rows=[], crops=EMPTY_CROPS)
    share = (time.perf_counter() - started) / max(1, len(scans))  # the block's write, shared by its scans
    batch = {k: v for k, v in batch.items() if k != "logits"}
    batch.update(crops=_ragged([scan["crops"] if keep_crops else EMPTY_CROPS for scan in scans]),
                 disc_rows=_texts([json.dumps(scan["disc_rows"], default=float) for scan in scans]),
                 n_discs=np.asarray([measured_count(scan["disc_rows"]) for scan in scans], dtype=np.int64),
                 seconds_measure=np.asarray(seconds) + share)
    batch.update(status=_texts(status), message=_texts(message), error_stage=_texts(stage), error_type=_texts(kind))
    return batch


class EncodeDiscs:
    """Model actor: the autoencoder is loaded once, then encodes each scan's disc crops."""

    def __init__(self, model_dir: Path):
        from ..autoencode.infer import load_autoencoder

        self.model = load_autoencoder(model_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        latents, seconds = [], []
        status, message, stage, kind = (list(batch[k]) for k in ("status", "message", "error_stage", "error_type"))
        disc_rows, n_discs = list(batch["disc_rows"]), list(batch["n_discs"])
        for i, crops in enumerate(batch["crops"]):
            started = time.perf_counter()
            crops = np.asarray(crops)
            latents.append(np.zeros((0, self.model.bottleneck), np.float32))
            if crops.ndim == 4 and len(crops):
                try:
                    inject_fault(getattr(self, "fail_at", None), "encode", batch["scan_id"][i])
                    latents[i] = self.model.encode(crops).astype(np.float32)
                except Exception as err:  # noqa: BLE001 - that scan's error row
                    failed = failure("encode", err)
                    status[i], message[i], stage[i], kind[i] = failed["status"], failed["message"], failed["error_stage"], failed["error_type"]
                    disc_rows[i], n_discs[i] = "[]", 0
            seconds.append(time.perf_counter() - started)
        batch = {k: v for k, v in batch.items() if k != "crops"}
        batch.update(latent=_ragged(latents), seconds_encode=np.asarray(seconds))
        batch.update(status=_texts(status), message=_texts(message), error_stage=_texts(stage), error_type=_texts(kind))
        batch.update(disc_rows=_texts(disc_rows), n_discs=np.asarray(n_discs, dtype=np.int64))
        return batch


def parts_sink(out: str, attempt: int, fail_at: dict | None = None):
    """The graph's sink: each block of scans leaves as one ``discs`` and one ``scans`` part (``io.outputs``).

    A ``ray.data.Datasink`` made here, so importing this module imports no Ray.
    """
    from ray.data import Datasink
    from ray.data.block import BlockAccessor

    class _PartsSink(Datasink):
        def write(self, blocks, ctx) -> int:
            rows = [row for block in blocks for row in BlockAccessor.for_block(block).iter_rows(public_row_format=True)]
            if rows:
                write_block_parts(Path(out), [table_values(row, fail_at) for row in rows], attempt)
            return len(rows)

    return _PartsSink()


def table_values(row, fail_at: dict | None = None) -> dict:
    """What ``io.outputs`` writes for one scan; a scan whose values will not decode becomes its error row."""
    row = dict(row)
    scan = {**row, "path": row.get("image_path"), "latent": row.get("latent"), "disc_rows": []}
    try:
        inject_fault(fail_at, "write", row["scan_id"])
        scan["disc_rows"] = json.loads(row.get("disc_rows") or "[]")
    except Exception as err:  # noqa: BLE001 - one scan's failure is its row
        scan.update(failure("write", err), latent=None, n_discs=0)
    return scan


def latent_dim(ae_dir: Path | None) -> int:
    if ae_dir is None:
        return 0
    from ..autoencode.infer import read_autoencoder_card

    return int(read_autoencoder_card(ae_dir)["bottleneck"])  # the card, not the weights


def _texts(values) -> np.ndarray:
    """Strings as an object array: a fixed-width numpy string column would cut longer messages short."""
    return np.asarray(["" if v is None else str(v) for v in values], dtype=object)


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """An object array of per-row arrays (Ray Data stores them as variable-shaped tensors)."""
    holder = np.empty(len(arrays), dtype=object)
    holder[:] = arrays
    return holder
