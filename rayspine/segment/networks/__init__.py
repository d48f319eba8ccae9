"""Segmentation networks, chosen by name; one output channel of disc-foreground logits.

Each module in this folder registers its networks (``io.cards.register("segmenter", name)``) as a
spec with ``kwargs(cfg) -> constructor kwargs``, ``build(kwargs) -> torch module`` and
``patch_multiple`` (the network's total downsampling). A model card records ``(name, kwargs)``, so it
rebuilds the network without the config that made it. A new network is one new module here.
"""

from __future__ import annotations

import math
from typing import Any

from ...config import SegConfig
from ...io.cards import SEGMENTER, network, registered


def resolve_network(name: str, cuda: bool | None = None) -> str:
    """``"auto"`` -> ``"swinunetr"`` when CUDA is available, else ``"unet"``; other names are checked."""
    if name == "auto":
        if cuda is None:
            import torch

            cuda = torch.cuda.is_available()
        return "swinunetr" if cuda else "unet"
    network(SEGMENTER, name)  # a clear error for a name nobody registered
    return name


def network_spec(name: str, cfg: SegConfig) -> tuple[str, dict[str, Any]]:
    """The resolved name and constructor kwargs for ``cfg``: what a model card records."""
    name = resolve_network(name)
    return name, network(SEGMENTER, name).kwargs(cfg)


def build_segmentation_net(name: str, cfg: SegConfig):
    """A network by name (``"auto"`` resolves by device) with one output channel of logits."""
    name, kwargs = network_spec(name, cfg)
    return network(SEGMENTER, name).build(kwargs)


def check_patch_size(name: str, patch_size) -> None:
    multiple = network(SEGMENTER, resolve_network(name)).patch_multiple
    bad = [p for p in patch_size if int(p) % multiple]
    if bad:
        raise ValueError(f"{name}: patch size {tuple(patch_size)} must be a multiple of {multiple} on every axis")


def network_names() -> list[str]:
    return sorted(registered(SEGMENTER))


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
