"""A trained disc autoencoder in use: load it, encode crops, decode codes. Imports nothing of training.

``load_autoencoder`` reads a ``bn<k>/`` model folder or a sweep folder's default model and gives a
``TrainedAutoencoder`` (eval mode, numpy in, numpy out), which the pipeline's encoding actors, the
latent columns of measured tables and the interpretation use. ``encode_table_crops`` is the one
encoder of a discs table's crops (``crops.zarr``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import Config
from ..io.cards import AUTOENCODER, CARD_FILE, ModelFileError, ModelCard, load_network, read_card
from ..io.store import read_disc_crops

log = logging.getLogger(__name__)

DEFAULT_FILE = "default.json"  # in a sweep folder: which bn<k>/ is the default model


# --- tensors --------------------------------------------------------------------------------------
def torch_device(device=None) -> torch.device:
    """The given device, else CUDA when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_batch(crops: np.ndarray, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """uint8/bool ``(b, s, s, s)`` -> float 0/1 ``(b, 1, s, s, s)`` on the device; the only float copy."""
    # A copy: arrays from Ray's object store are read-only, and a uint8 batch copy is cheap. Binarised
    # in numpy: torch's CPU comparison on uint8 tensors measured ~100x slower than numpy's (torch 2.13).
    batch = np.array(crops, dtype=np.uint8, copy=True)
    np.minimum(batch, 1, out=batch)  # 0/1 whatever the foreground value (1, 255 ...)
    x = torch.from_numpy(batch).to(device, non_blocking=True).unsqueeze(1).float()
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x


def check_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """``(n, size, size, size)`` uint8 (bool is viewed as uint8), or a ValueError saying what is wrong."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (size,) * 3:
        raise ValueError(f"crops must be (n, {size}, {size}, {size}), got {crops.shape}")
    if crops.dtype == bool:
        return crops.view(np.uint8)
    if crops.dtype != np.uint8:
        raise ValueError(f"crops must be uint8 or bool binary masks, got {crops.dtype}")
    return crops


# --- the trained model ----------------------------------------------------------------------------
class TrainedAutoencoder:
    """A trained autoencoder ready for inference: numpy in, numpy out, eval mode, batched.

    ``encode`` takes ``(n, s, s, s)`` uint8/bool crops and gives ``(n, k)`` float32 codes; ``decode``
    takes codes and gives ``(n, s, s, s)`` float32 probabilities (threshold at 0.5 for masks).
    """

    def __init__(self, net, card: ModelCard | None = None, device=None, batch_size: int = 16):
        self.device = torch_device(device)
        self.net = net.to(self.device).eval()
        self.card = card
        self.batch_size = int(batch_size)
        self.bottleneck = int(net.bottleneck)
        self.crop_size = int(net.crop_size)
        self.spacing = tuple(float(s) for s in card.spacing_mm) if card is not None else (float("nan"),) * 3
        self.crop_frame = crop_frame_of_model(card)

    def encode(self, crops: np.ndarray) -> np.ndarray:
        crops = check_crops(crops, self.crop_size)
        out = np.empty((len(crops), self.bottleneck), np.float32)
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                x = to_batch(crops[start : start + self.batch_size], self.device)
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
    if (path / CARD_FILE).is_file():
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
    raise ModelFileError(f"{path}: neither a model folder ({CARD_FILE}) nor a sweep folder ({DEFAULT_FILE})")


def crop_frame_of_model(card: ModelCard | None) -> str:
    """The crop frame an autoencoder was trained in (``DiscConfig.crop_frame``); cards from before the
    choice existed were all trained in the scan's frame."""
    return str(card.get("crop_frame", "scan")) if card is not None else "scan"


def with_crop_frame_of(cfg: Config, card: ModelCard) -> Config:
    """``cfg`` with the crop frame of the autoencoder of ``card``: its crops must be made as it learnt them."""
    frame = crop_frame_of_model(card)
    if frame == cfg.discs.crop_frame:
        return cfg
    log.info("crops in the autoencoder's frame, %r (the config said %r)", frame, cfg.discs.crop_frame)
    return cfg.replace(discs={"crop_frame": frame})


def read_autoencoder_card(path: Path) -> ModelCard:
    """The card of a model or sweep folder's autoencoder, without loading its weights."""
    return read_card(resolve_model_dir(path), AUTOENCODER)


def load_autoencoder(path: Path, device=None) -> TrainedAutoencoder:
    """Load a trained autoencoder from a bn<k>/ folder or a sweep folder (its default model)."""
    net, card = load_network(resolve_model_dir(path), AUTOENCODER)
    return TrainedAutoencoder(net, card, device=device)


def encode_table_crops(model: TrainedAutoencoder, discs: pd.DataFrame, crops_root: Path) -> np.ndarray:
    """Codes ``(len(discs), k)`` of a discs table's crops (``io.store.read_disc_crops``).

    Rows without a crop (``crop_index`` < 0 or null) get NaN codes.
    """
    crops_root = Path(crops_root)
    if "crop_index" not in discs or not crops_root.is_dir():
        raise ValueError(f"the discs table has no crops to encode: no crop_index column or no {crops_root}")
    codes = np.full((len(discs), model.bottleneck), np.nan, dtype=np.float32)
    index = pd.to_numeric(discs["crop_index"], errors="coerce").fillna(-1).astype(int).to_numpy()
    has_crop = np.flatnonzero(index >= 0)
    if len(has_crop):
        codes[has_crop] = model.encode(read_disc_crops(crops_root, discs.iloc[has_crop].assign(crop_index=index[has_crop])))
    return codes
