"""MONAI's SwinUNETR-V2 (the paper's network), SegResNet and a residual 3-D U-Net.

Why U-Net is the CPU default: measured on the 2-core VM (bench/segment.md), a training step on a batch
of four 64x96x96 patches takes ~0.9 s with the U-Net below and ~11 s with even a slimmed SegResNet
(its full-resolution GroupNorm residual blocks dominate on CPU), so only the U-Net trains to the
required Dice inside the 15-minute budget. SwinUNETR-V2 stays the GPU default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from ...config import SegConfig
from ...io.cards import SEGMENTER, register


@dataclass(frozen=True)
class MonaiNetwork:
    monai_class: str  # name in monai.networks.nets
    kwargs: Callable[[SegConfig], dict[str, Any]]
    patch_multiple: int  # patch edges must be multiples of this (the network's total downsampling)

    def build(self, kwargs: dict[str, Any]):
        import monai.networks.nets

        return getattr(monai.networks.nets, self.monai_class)(**kwargs)


def _swinunetr(cfg: SegConfig) -> dict[str, Any]:
    # SwinUNETR insists on a feature size divisible by 12: the configured width rounded up, and at
    # least 24 (thinner transformers learn poorly; MONAI's own examples use 48). It runs on a GPU,
    # where the CPU-minded default width does not bind. MONAI 1.6 dropped ``img_size``: the input
    # only has to be a multiple of 32 per axis.
    return {"in_channels": 1, "out_channels": 1, "feature_size": max(24, 12 * math.ceil(cfg.feature_size / 12)), "use_v2": True}


def _segresnet(cfg: SegConfig) -> dict[str, Any]:
    return {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "init_filters": int(cfg.feature_size)}


def _unet(cfg: SegConfig) -> dict[str, Any]:
    # Five levels, stride 2 each (16x total), two residual units per level.
    width = int(cfg.feature_size)
    return {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [width * 2**i for i in range(5)],
        "strides": [2, 2, 2, 2],
        "num_res_units": 2,
    }


register(SEGMENTER, "swinunetr")(MonaiNetwork("SwinUNETR", _swinunetr, 32))
register(SEGMENTER, "segresnet")(MonaiNetwork("SegResNet", _segresnet, 8))
register(SEGMENTER, "unet")(MonaiNetwork("UNet", _unet, 16))
