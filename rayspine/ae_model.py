"""A trained disc autoencoder on disk and in use: its card and weights, encode and decode.

``save_autoencoder`` writes what ``train_autoencoder`` made; ``load_autoencoder`` reads a ``bn<k>/``
folder or a sweep folder's default model and gives a ``DiscAutoencoderModel`` (eval mode, numpy in,
numpy out), which the pipeline's encoding actors and the interpretation use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .autoencoder import DEFAULT_FILE, KIND, _check_crops, _device, _to_batch
from .disc_autoencoder import ARCHITECTURE, DiscAutoencoder
from .io.models import ModelFileError, load_card, load_weights, save_model

if TYPE_CHECKING:
    from .autoencoder import TrainResult


def save_autoencoder(result: TrainResult, folder: Path, spacing_mm, config_digest: str = "", extra: dict | None = None) -> Path:
    """Weights and model card of a trained autoencoder in ``folder`` (model.safetensors + model.json)."""
    net = result.net
    card = {
        "kind": KIND,
        "architecture": ARCHITECTURE,
        "kwargs": net.kwargs(),
        "bottleneck": net.bottleneck,
        "crop_size": net.crop_size,
        "spacing_mm": [float(s) for s in spacing_mm],
        "input": "binary disc crop, uint8 0/1, centred at the disc's centre of mass",
        "output": "logits; sigmoid once at inference, mask = probability > 0.5",
        "metrics": result.metrics(),
        "data_hash": result.data_hash,
        "config_digest": config_digest,
        "torch": torch.__version__,
        **(extra or {}),
    }
    return save_model(folder, net.state_dict(), card)


class DiscAutoencoderModel:
    """A trained autoencoder ready for inference: numpy in, numpy out, eval mode, batched.

    ``encode`` takes ``(n, s, s, s)`` uint8/bool crops and gives ``(n, k)`` float32 codes; ``decode``
    takes codes and gives ``(n, s, s, s)`` float32 probabilities (threshold at 0.5 for masks).
    """

    def __init__(self, net: DiscAutoencoder, card: dict | None = None, device=None, batch_size: int = 16):
        self.device = _device(device)
        self.net = net.to(self.device).eval()
        self.card = card or {}
        self.batch_size = int(batch_size)
        self.bottleneck = int(net.bottleneck)
        self.crop_size = int(net.crop_size)
        self.spacing = tuple(float(s) for s in self.card.get("spacing_mm", (float("nan"),) * 3))

    def encode(self, crops: np.ndarray) -> np.ndarray:
        crops = _check_crops(crops, self.crop_size)
        out = np.empty((len(crops), self.bottleneck), np.float32)
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                x = _to_batch(crops[start : start + self.batch_size], self.device, channels_last=False)
                out[start : start + len(x)] = self.net.encode(x).float().cpu().numpy()
        return out

    def decode(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.bottleneck:
            raise ValueError(f"codes must be (n, {self.bottleneck}), got {z.shape}")
        s = self.crop_size
        out = np.empty((len(z), s, s, s), np.float32)
        with torch.inference_mode():
            for start in range(0, len(z), self.batch_size):
                codes = torch.from_numpy(z[start : start + self.batch_size]).to(self.device)
                probs = self.net.probabilities(self.net.decode(codes))
                out[start : start + len(codes)] = probs[:, 0].float().cpu().numpy()
        return out

    def reconstruct(self, crops: np.ndarray) -> np.ndarray:
        """Binary reconstructions (uint8) of crops: decode(encode(crops)) > 0.5."""
        return (self.decode(self.encode(crops)) > 0.5).astype(np.uint8)


def resolve_model_dir(path: Path) -> Path:
    """A bn<k>/ model folder, or the default model of a sweep folder (its default.json)."""
    path = Path(path)
    if (path / "model.json").is_file():
        return path
    default = path / DEFAULT_FILE
    if default.is_file():
        try:
            name = json.loads(default.read_text())["model"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ModelFileError(f"{default}: unusable ({err})") from None
        folder = (path / name).resolve()
        if path.resolve() not in folder.parents:
            raise ModelFileError(f"{default}: model {name!r} lies outside the sweep folder")
        return folder
    raise ModelFileError(f"{path}: neither a model folder (model.json) nor a sweep folder ({DEFAULT_FILE})")


def load_autoencoder(path: Path, device=None) -> DiscAutoencoderModel:
    """Load a trained autoencoder from a bn<k>/ folder or a sweep folder (its default model)."""
    folder = resolve_model_dir(path)
    card = load_card(folder, required=("kind", "architecture", "kwargs", "spacing_mm"))
    if card["kind"] != KIND or card["architecture"] != ARCHITECTURE:
        raise ModelFileError(f"{folder}: a {card['kind']}/{card['architecture']} model, not a {KIND}/{ARCHITECTURE}")
    try:
        net = DiscAutoencoder(**card["kwargs"])
        net.load_state_dict(load_weights(folder), strict=True)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{folder}: weights do not fit the card's architecture ({str(err).splitlines()[0]})") from None
    return DiscAutoencoderModel(net, card, device=device)
