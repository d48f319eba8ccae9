"""Disc segmentation at inference: a trained ``Segmenter`` and the steps around its network.

``Segmenter.predict`` takes a scan on its own grid and returns the binary disc foreground on that same
grid: the scan is prepared exactly as in training (canonical LPS, target spacing, robust normalisation),
segmented by sliding windows, and the probability map is resampled back (linear, then thresholded).
Instances and levels are found later (``rayspine.measure``). Nothing here trains or imports training.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import Config, DiscConfig
from ..io.cards import SEGMENTER, ModelCard, load_network, read_card
from ..measure.instances import kept_foreground
from ..measure.scan import measure_mask
from ..preprocess import to_scan_grid
from ..stats import iou_dice
from ..volume import Volume
from .data import disc_foreground, prepare_image


def read_segmenter_card(model_dir: str | Path) -> ModelCard:
    """The card of a segmenter folder: what preparing the input and reading the output need."""
    return read_card(model_dir, SEGMENTER)


class Segmenter:
    """A trained network with the preprocessing its card prescribes; load once, predict per scan."""

    def __init__(self, net, card: ModelCard, device: str | None = None, precision: str = "auto"):
        import torch

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = net.to(self.device).eval()
        self.card = card
        self.bfloat16 = runs_in_bfloat16(precision, self.device)

    @classmethod
    def load(cls, model_dir: str | Path, device: str | None = None, precision: str = "auto") -> Segmenter:
        """Validate the card, rebuild the network it names and load its safetensors weights."""
        net, card = load_network(model_dir, SEGMENTER)
        return cls(net, card, device, precision)

    def logits(self, prepared: Volume) -> Volume:
        """Sliding-window logits on the network's grid for an input made by ``prepare_input``."""
        card = self.card
        logits = predict_logits(self.net, prepared.voxels, card["patch_size"], card.get("sw_overlap", 0.25), self.device, self.bfloat16)
        return prepared.with_voxels(logits)

    def predict(self, volume: Volume) -> Volume:
        """Binary uint8 disc foreground (0/1) with the input's shape, spacing, origin and direction."""
        return mask_from_logits(self.card, self.logits(prepare_input(self.card, volume)), volume)


PRECISIONS = ("auto", "gpu", "float32", "bfloat16")


def check_precision(precision: str, setting: str = "seg.inference_precision") -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"{setting} is {precision!r}: one of {', '.join(PRECISIONS)}")
    return precision


def runs_in_bfloat16(precision: str, device) -> bool:
    """Whether the network runs under bfloat16 autocast (``SegConfig.inference_precision``, ``train_precision``).

    ``auto``: on a GPU, and on a CPU with bfloat16 matrix instructions (Intel AMX or AVX512-BF16), where
    oneDNN's bfloat16 convolutions take about half the time of float32 ones (bench/segment.md); float32 on
    other CPUs, which would only emulate bfloat16. ``gpu``: on a GPU only.
    """
    import torch

    if check_precision(precision) in ("float32", "bfloat16"):
        return precision == "bfloat16"
    if torch.device(device).type == "cuda":
        return True
    if precision == "gpu":
        return False
    # torch.cpu's feature probes are private (underscored) but the only ones torch has; a missing one says no.
    probes = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(probe is not None and probe() for probe in probes)


def predict_logits(net, image: np.ndarray, patch_size, overlap: float, device, bfloat16: bool = False) -> np.ndarray:
    """Sliding-window logits ``(X, Y, Z)`` float32 for a prepared ``(X, Y, Z)`` image (MONAI, Gaussian blend).

    Runs under ``torch.inference_mode``, the network under bfloat16 autocast when ``bfloat16``
    (``runs_in_bfloat16``); the windows are blended in float32.
    """
    import torch
    from monai.inferers import sliding_window_inference

    # A read-only input (an array from Ray's object store) is copied: torch does not take non-writable arrays.
    x = torch.as_tensor(np.require(image, np.float32, ["C_CONTIGUOUS", "WRITEABLE"]), device=device)[None, None]
    with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bfloat16):
        logits = sliding_window_inference(
            x, roi_size=tuple(int(p) for p in patch_size), sw_batch_size=4, predictor=net, overlap=overlap, mode="gaussian"
        )
    return logits[0, 0].float().cpu().numpy()


# The steps before and after the network need only the card, not the weights, so the pipeline runs
# them as CPU tasks and keeps the model actors (GPUs on a cluster) busy with the network alone.
def prepare_input(card: ModelCard, volume: Volume) -> Volume:
    """The network's input for a scan: canonical orientation and spacing, normalised as in training."""
    return prepare_image(volume, card.spacing_mm, card["normalisation"]["clip_percentiles"], card["orientation"])


def mask_from_logits(card: ModelCard, logits: Volume, reference: Volume) -> Volume:
    """Binary uint8 foreground on ``reference``'s grid: probabilities resampled back (linear), then thresholded.

    Thresholding after the way back keeps sub-voxel boundaries on thick-slice scans. Only
    ``reference``'s grid and shape are used, never its voxels.
    """
    prob = (1.0 / (1.0 + np.exp(-np.clip(logits.voxels, -50, 50)))).astype(np.float32)
    back = to_scan_grid(logits.with_voxels(prob), reference, interpolation="linear").voxels
    return reference.with_voxels((back > float(card.get("threshold", 0.5))).astype(np.uint8))


def make_card(name: str, kwargs: dict, cfg: Config, data_hash: str = "", **fields) -> ModelCard:
    """The model card: how to rebuild the network and prepare its input, and where it came from."""
    return ModelCard(
        kind=SEGMENTER,
        architecture=name,
        kwargs=kwargs,
        spacing_mm=tuple(cfg.grid.spacing_mm),
        data_hash=data_hash,
        config_digest=cfg.digest(),
        fields={
            "orientation": cfg.grid.orientation,
            "normalisation": {"method": "percentile_clip_then_zscore", "clip_percentiles": list(cfg.seg.clip_percentiles)},
            "patch_size": list(cfg.seg.patch_size),
            "sw_overlap": cfg.seg.sw_overlap,
            "threshold": cfg.seg.threshold,
            "foreground": "disc labels 201..225 (SPIDER)",
            "output": "logits, one channel",
            **fields,
        },
    )


def evaluate(segmenter: Segmenter, pairs, disc_cfg: DiscConfig = DiscConfig()) -> list[dict]:
    """Per-scan IoU and Dice on each scan's own grid: ``pairs`` yields ``(scan_id, image, mask)``.

    ``iou``/``dice`` score the network's mask; ``dice_discs`` scores what measurement keeps of it, the
    disc instances (``measure.instances.kept_foreground``: pieces too small to be a disc dropped). When
    the manual mask numbers its discs (SPIDER labels), the levels that ``measure`` gives the network's
    mask are checked against them (``level_agreement``), with the scan's status (``level_uncertain``).
    """
    rows = []
    for scan_id, image, mask in pairs:
        start = time.perf_counter()
        pred = segmenter.predict(image)
        truth = disc_foreground(mask.voxels)
        iou, dice = iou_dice(pred.voxels, truth)
        dice_discs = iou_dice(kept_foreground(pred.voxels, pred.spacing, disc_cfg), truth)[1]
        row = {"scan_id": scan_id, "iou": iou, "dice": dice, "dice_discs": dice_discs}
        if np.any(mask.voxels > 201):  # numbered discs (a binary mask says nothing about levels)
            measured = measure_mask(pred, replace(Config(), discs=disc_cfg), binary=True)
            row.update(level_agreement(measured.labels, mask.voxels), scan_status=str(measured.status))
        rows.append({**row, "seconds": time.perf_counter() - start})
    return rows


def level_agreement(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """How many of the manual mask's discs (SPIDER labels 201..) the predicted label mask found, and how
    many of those it gave the right level: a disc's level is the predicted disc label covering most of it."""
    found = correct = 0
    wrong = []
    labels = np.unique(truth[(truth > 200) & (truth < 300)])
    for label in labels:
        under = predicted[truth == label]
        under = under[(under > 200) & (under < 300)]
        if under.size:
            found += 1
            got = int(np.bincount(under - 200).argmax()) + 200
            correct += int(got == label)
            if got != label:
                wrong.append(f"{int(label) - 200}->{got - 200}")
    return {"discs_labelled": len(labels), "discs_found": found, "levels_correct": correct, "levels_wrong": ", ".join(wrong)}
