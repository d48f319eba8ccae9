"""Segmentation networks (MONAI), chosen by name; one output channel of disc-foreground logits.

A network is described by ``(name, kwargs)``: the kwargs are exactly the MONAI constructor arguments,
so a model card can rebuild the network without the config that made it (``build_from_spec``).

Why U-Net is the CPU default: measured on the 2-core VM (bench/segment.md), a training step on a batch
of four 64x96x96 patches takes ~0.9 s with the U-Net below and ~11 s with even a slimmed SegResNet
(its full-resolution GroupNorm residual blocks dominate on CPU), so only the U-Net trains to the
required Dice inside the 15-minute budget. SwinUNETR-V2 (the paper's network) stays the GPU default.
"""

from __future__ import annotations

import math
from typing import Any

from .config import SegConfig

NETWORKS = ("swinunetr", "segresnet", "unet")


def resolve_network(name: str, cuda: bool | None = None) -> str:
    """``"auto"`` -> ``"swinunetr"`` when CUDA is available, else ``"unet"``; other names are checked."""
    if name == "auto":
        if cuda is None:
            import torch

            cuda = torch.cuda.is_available()
        return "swinunetr" if cuda else "unet"
    if name not in NETWORKS:
        raise ValueError(f"unknown segmentation network {name!r}; choose one of {NETWORKS} or 'auto'")
    return name


def patch_multiple(name: str) -> int:
    """Patch edges must be multiples of this (the network's total downsampling)."""
    return {"swinunetr": 32, "segresnet": 8, "unet": 16}[resolve_network(name)]


def network_spec(name: str, cfg: SegConfig) -> tuple[str, dict[str, Any]]:
    """The resolved name and MONAI constructor kwargs for ``cfg``: what a model card records."""
    name = resolve_network(name)
    width = int(cfg.feature_size)
    if name == "swinunetr":
        # SwinUNETR insists on a feature size divisible by 12: the configured width rounded up, and at
        # least 24 (thinner transformers learn poorly; MONAI's own examples use 48). It runs on a GPU,
        # where the CPU-minded default width does not bind. MONAI 1.6 dropped ``img_size``: the input
        # only has to be a multiple of 32 per axis.
        kwargs = {"in_channels": 1, "out_channels": 1, "feature_size": max(24, 12 * math.ceil(width / 12)), "use_v2": True}
    elif name == "segresnet":
        kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "init_filters": width}
    else:
        # Five levels, stride 2 each (16x total), two residual units per level.
        kwargs = {
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 1,
            "channels": [width * 2**i for i in range(5)],
            "strides": [2, 2, 2, 2],
            "num_res_units": 2,
        }
    return name, kwargs


def build_from_spec(name: str, kwargs: dict[str, Any]):
    """Instantiate a network from a card's ``(name, kwargs)``."""
    from monai.networks.nets import SegResNet, SwinUNETR, UNet

    classes = {"swinunetr": SwinUNETR, "segresnet": SegResNet, "unet": UNet}
    if name not in classes:
        raise ValueError(f"unknown segmentation network {name!r}; choose one of {NETWORKS}")
    return classes[name](**kwargs)


def build_segmentation_net(name: str, cfg: SegConfig):
    """A network by name (``"auto"`` resolves by device) with one output channel of logits."""
    return build_from_spec(*network_spec(name, cfg))


def check_patch_size(name: str, patch_size) -> None:
    multiple = patch_multiple(name)
    bad = [p for p in patch_size if int(p) % multiple]
    if bad:
        raise ValueError(f"{name}: patch size {tuple(patch_size)} must be a multiple of {multiple} on every axis")


def init_output_bias(net, prior: float = 0.02) -> None:
    """Start the output logits at the log-odds of the foreground share (Lin et al. 2017, focal loss).

    Discs are a few percent of a patch; from logits of 0 (p = 0.5) Adam at lr 1e-3 needs hundreds of
    steps just to learn "mostly background", which on a CPU budget is most of the run. The output
    layer is the last convolution with one output channel (every network here ends in one).
    """
    import torch

    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) and m.out_channels == 1]
    if not convs or convs[-1].bias is None:
        raise ValueError(f"{type(net).__name__}: no output convolution with a bias found")
    with torch.no_grad():
        convs[-1].bias.fill_(float(math.log(prior / (1.0 - prior))))
