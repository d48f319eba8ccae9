"""The disc autoencoder of Perrone et al. (2025), in one file.

A 64^3 binary disc crop goes through strided 3-D convolutions (each halving the grid, with batch norm
and ReLU) down to a 4^3 feature map, then through one linear layer to a bottleneck of ``k`` numbers,
the disc's latent code. The decoder mirrors it: a linear layer back to the 4^3 map, then transposed
convolutions that double the grid, the last one giving one logit per voxel. There are no skip
connections, so everything the decoder knows about a disc has passed through the ``k`` numbers.

The network returns logits. Training uses ``BCEWithLogitsLoss`` (which holds the sigmoid, in its
numerically stable form); the sigmoid is applied once, at inference, by :meth:`probabilities`.
A mask is ``logits > 0``, the same as ``sigmoid > 0.5``. After training, the default recipe moves that
boundary to the probability that reconstructs the training crops best (``move_decision_boundary``):
BCE on thin discs leaves the boundary voxels just under 0.5, so masks at 0.5 come out ~4 % too small.

Nothing here trains, loads files or knows about Ray (see ``autoencode/train.py`` and ``sweep.py``).
Registered as ``conv``, the default ``AEConfig.model``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...io.cards import AUTOENCODER, register
from . import ShapeAutoencoder

FOREGROUND_PRIOR = 0.02  # share of a 64^3 crop a lumbar disc fills at the canonical spacing


def _down(c_in: int, c_out: int) -> nn.Sequential:
    # Stride 2 halves each axis (64 -> 32 ...). No conv bias: batch norm's shift replaces it.
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


def _up(c_in: int, c_out: int, last: bool = False) -> nn.Module:
    # Mirror of _down: output_padding=1 makes the transposed conv exactly double each axis.
    conv = nn.ConvTranspose3d(c_in, c_out, kernel_size=3, stride=2, padding=1, output_padding=1, bias=last)
    if last:
        return conv  # raw logits: no norm, no activation
    return nn.Sequential(conv, nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


@register(AUTOENCODER, "conv")
class DiscAutoencoder(ShapeAutoencoder):
    """Convolutional autoencoder for ``(n, 1, s, s, s)`` binary crops with a ``bottleneck``-sized code.

    ``channels`` are the encoder widths, one stride-2 stage each, so ``crop_size`` must be divisible
    by ``2 ** len(channels)`` (64 with four stages gives a 4^3 map of ``channels[-1]`` features).
    """

    def __init__(self, bottleneck: int, channels: tuple[int, ...] = (16, 32, 64, 128), crop_size: int = 64):
        super().__init__()
        if bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {bottleneck}")
        stages = len(channels)
        if crop_size % (2**stages):
            raise ValueError(f"crop size {crop_size} is not divisible by 2**{stages}")
        self.bottleneck = int(bottleneck)
        self.channels = tuple(int(c) for c in channels)
        self.crop_size = int(crop_size)
        self._map_shape = (self.channels[-1],) + (crop_size // 2**stages,) * 3
        flat = self.channels[-1] * (crop_size // 2**stages) ** 3

        widths = (1, *self.channels)
        self.encoder = nn.Sequential(*[_down(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.to_code = nn.Linear(flat, self.bottleneck)  # linear bottleneck: no norm, no activation
        self.from_code = nn.Sequential(nn.Linear(self.bottleneck, flat), nn.ReLU(inplace=True))
        back = widths[::-1]  # (128, 64, 32, 16, 1)
        self.decoder = nn.Sequential(
            *[_up(a, b, last=(i == stages - 1)) for i, (a, b) in enumerate(zip(back[:-1], back[1:]))]
        )
        # Start the output at the log-odds of a typical disc's share of the crop (~2%), not at 50%:
        # otherwise the first epochs are spent learning that the background is background.
        nn.init.constant_(self.decoder[-1].bias, math.log(FOREGROUND_PRIOR / (1 - FOREGROUND_PRIOR)))

    def kwargs(self) -> dict:
        """Constructor arguments, for the model card (``DiscAutoencoder(**kwargs)`` rebuilds it)."""
        return {"bottleneck": self.bottleneck, "channels": list(self.channels), "crop_size": self.crop_size}

    def move_decision_boundary(self, probability: float) -> None:
        """Shift the last layer's bias by the threshold's log-odds, so the mask stays ``logits > 0``."""
        with torch.no_grad():
            self.decoder[-1].bias -= math.log(probability / (1 - probability))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, 1, s, s, s)`` float crops -> ``(n, k)`` latent codes."""
        return self.to_code(torch.flatten(self.encoder(x), 1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(n, k)`` codes -> ``(n, 1, s, s, s)`` logits."""
        return self.decoder(self.from_code(z).view(-1, *self._map_shape))
