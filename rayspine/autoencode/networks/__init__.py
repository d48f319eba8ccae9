"""Disc autoencoders, chosen by name (``AEConfig.model``, ``rayspine train-ae --model NAME``).

Every module in this folder registers its networks with ``@register(AUTOENCODER, name)``; the model
card records the name and the constructor's kwargs. A network subclasses ``ShapeAutoencoder``: its
constructor takes ``(bottleneck, channels, crop_size)``, it implements ``encode`` and ``decode`` and,
when its objective is not plain BCE, ``loss``. So a variant (a variational autoencoder, say) is one new
module here, found by name the first time the registry is asked.
"""

from __future__ import annotations

import torch
from torch import nn


class ShapeAutoencoder(nn.Module):
    """What training, scoring and inference rely on: ``(n, 1, s, s, s)`` binary crops in, logits out."""

    bottleneck: int
    crop_size: int

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, 1, s, s, s)`` float crops -> ``(n, k)`` latent codes (deterministic in eval mode)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(n, k)`` codes -> ``(n, 1, s, s, s)`` logits."""
        raise NotImplementedError

    def kwargs(self) -> dict:
        """Constructor arguments, for the model card (``type(net)(**kwargs)`` rebuilds it)."""
        raise NotImplementedError

    def move_decision_boundary(self, probability: float) -> None:
        """Make ``logits > 0`` mark what ``sigmoid(logits) > probability`` marked before (a shift of the
        output's log-odds; ``train.calibrate_threshold`` picks it on the training crops)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction's logits: what convergence and held-out IoU are judged on."""
        return self.decode(self.encode(x))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The training objective for a batch of crops: BCE of the reconstruction (the paper's)."""
        return nn.functional.binary_cross_entropy_with_logits(self(x).float(), x)

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        """The one sigmoid of the model, for inference only."""
        return torch.sigmoid(logits)
