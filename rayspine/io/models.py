"""Model weights and their JSON cards.

Weights are safetensors files: they hold tensors and nothing else, so loading one never runs code.
Legacy ``.pt`` state dicts are read with ``torch.load(weights_only=True)``, which refuses pickled
objects. A card is validated before the weights it describes are used.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from .store import write_json_atomic

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"


class ModelFileError(Exception):
    """A model folder whose weights or card cannot be trusted or used."""


def save_model(folder: str | Path, state_dict: dict, card: dict) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{WEIGHTS_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    # safetensors refuses tensors that share memory; contiguous copies are cheap at these sizes.
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}, str(tmp))
    os.replace(tmp, folder / WEIGHTS_FILE)
    write_json_atomic(card, folder / CARD_FILE)
    return folder


def load_card(folder: str | Path, required: tuple[str, ...] = ("kind", "architecture")) -> dict:
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise ModelFileError(f"{folder}: no {CARD_FILE} model card")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path}: model card is not valid JSON ({err})") from None
    if not isinstance(card, dict):
        raise ModelFileError(f"{path}: model card must be a JSON object")
    missing = [k for k in required if k not in card]
    if missing:
        raise ModelFileError(f"{path}: model card lacks {missing}")
    return card


def load_weights(folder: str | Path) -> dict:
    """The state dict of a model folder; never unpickles arbitrary objects."""
    folder = Path(folder)
    safe = folder / WEIGHTS_FILE
    if safe.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(safe))
        except (SafetensorError, OSError, ValueError) as err:
            raise ModelFileError(f"{safe}: unreadable weights ({err})") from None
    legacy = sorted(folder.glob("*.pt"))
    if legacy:
        import pickle

        import torch

        try:
            return torch.load(legacy[0], map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
            raise ModelFileError(f"{legacy[0]}: refused, not a plain state dict ({str(err).splitlines()[0]})") from None
    raise ModelFileError(f"{folder}: no {WEIGHTS_FILE}")
