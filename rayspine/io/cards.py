"""Model folders: safetensors weights, a typed JSON card, and one registry of networks for both kinds.

A model folder holds ``model.safetensors`` (tensors only, so loading never runs code) and
``model.json``, its card. Both kinds of model share one card layout (``card_version`` 2)::

    {"card_version": 2, "kind": "segmenter" | "autoencoder",
     "architecture": {"name": <registered network>, "kwargs": {...constructor arguments...}},
     "spacing_mm": [...], "metrics": {...}, "data_hash": "...", "config_digest": "...", ...kind's fields}

Version 0.1 autoencoder cards (``"architecture": "DiscAutoencoder"`` with ``kwargs`` at the top) are
read and converted; legacy ``.pt`` state dicts are read with ``torch.load(weights_only=True)``.

Networks are found by name in a registry: every module of ``rayspine/segment/networks/`` and
``rayspine/autoencode/networks/`` registers its networks with ``@register(kind, name)`` when the
registry is first asked, so a new network is one new file in that folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ModelFileError  # noqa: F401 - raised here, caught by callers
from .store import atomic_path, write_json_atomic

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
CARD_VERSION = 2
SEGMENTER, AUTOENCODER = "segmenter", "autoencoder"
LEGACY_ARCHITECTURES = {"DiscAutoencoder": "conv"}  # 0.1 card names -> registry names


# --- the registry ---------------------------------------------------------------------------------
NETWORK_PACKAGES = {SEGMENTER: "rayspine.segment.networks", AUTOENCODER: "rayspine.autoencode.networks"}
_REGISTRY: dict[str, dict[str, Any]] = {SEGMENTER: {}, AUTOENCODER: {}}
_DISCOVERED: set[str] = set()


def register(kind: str, name: str) -> Callable:
    """Decorator: make a network class (or spec) available under ``name`` for model cards and ``--model``."""

    def add(obj):
        _REGISTRY[kind][name] = obj
        if isinstance(obj, type):
            obj.network_name = name  # what a card written from an instance records
        return obj

    return add


def registered(kind: str, rescan: bool = False) -> dict[str, Any]:
    """Every network of ``kind`` by name, importing each module of the kind's networks package once
    (again with ``rescan``, for a module added while the process runs)."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown model kind {kind!r}; one of {sorted(_REGISTRY)}")
    if rescan or kind not in _DISCOVERED:
        package = importlib.import_module(NETWORK_PACKAGES[kind])
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
        _DISCOVERED.add(kind)
    return _REGISTRY[kind]


def unregister(kind: str, name: str) -> None:
    _REGISTRY[kind].pop(name, None)


def network(kind: str, name: str) -> Any:
    """The registered network ``name`` of ``kind``, or a ValueError listing the names there are."""
    found = registered(kind)
    if name not in found:
        raise ValueError(f"unknown {kind} network {name!r}; registered: {sorted(found)}")
    return found[name]


# --- cards ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelCard:
    """What a model folder says about its weights: enough to rebuild the network and use it correctly.

    ``fields`` holds the kind's own entries (a segmenter's orientation, normalisation, patch size,
    window overlap and threshold; an autoencoder's bottleneck and crop size) and provenance (training
    history, settings); the typed accessors below read the ones the code relies on.
    """

    kind: str
    architecture: str
    kwargs: dict
    spacing_mm: tuple[float, float, float]
    metrics: dict = field(default_factory=dict)
    data_hash: str = ""
    config_digest: str = ""
    fields: dict = field(default_factory=dict)

    REQUIRED = {SEGMENTER: ("orientation", "normalisation", "patch_size"), AUTOENCODER: ("bottleneck", "crop_size")}

    def __getitem__(self, key: str) -> Any:  # card["patch_size"]: the JSON view, for reading fields
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)

    def to_json(self) -> dict:
        return {
            **self.fields,
            "card_version": CARD_VERSION,
            "kind": self.kind,
            "architecture": {"name": self.architecture, "kwargs": self.kwargs},
            "spacing_mm": [float(s) for s in self.spacing_mm],
            "metrics": self.metrics,
            "data_hash": self.data_hash,
            "config_digest": self.config_digest,
        }

    def with_metrics(self, metrics: dict) -> ModelCard:
        return dataclasses.replace(self, metrics=metrics)

    @classmethod
    def from_json(cls, data: dict, where: str = "model card") -> ModelCard:
        """Validate and type a card read from JSON; converts version-0.1 cards."""
        if not isinstance(data, dict):
            raise ModelFileError(f"{where}: must be a JSON object")
        data = dict(data)
        arch = data.pop("architecture", None)
        if isinstance(arch, str):  # 0.1 autoencoder card: the name here, its kwargs at the top level
            arch = {"name": LEGACY_ARCHITECTURES.get(arch, arch), "kwargs": data.pop("kwargs", None)}
        missing = [k for k in ("kind", "spacing_mm") if k not in data]
        if not isinstance(arch, dict) or not isinstance(arch.get("kwargs"), dict) or not isinstance(arch.get("name"), str):
            missing.append("architecture {name, kwargs}")
        missing += [k for k in cls.REQUIRED.get(data.get("kind"), ()) if k not in data]
        if missing:
            raise ModelFileError(f"{where}: model card lacks {missing}")
        data.pop("card_version", None)
        return cls(
            kind=data.pop("kind"),
            architecture=arch["name"],
            kwargs=arch["kwargs"],
            spacing_mm=tuple(float(s) for s in data.pop("spacing_mm")),
            metrics=data.pop("metrics", {}) or {},
            data_hash=data.pop("data_hash", ""),
            config_digest=data.pop("config_digest", ""),
            fields=data,
        )

    def build(self):
        """The network this card describes, with fresh weights."""
        spec = network(self.kind, self.architecture)
        return spec.build(self.kwargs) if hasattr(spec, "build") else spec(**self.kwargs)


def save_model(folder: str | Path, state_dict: dict, card: ModelCard) -> Path:
    """Weights then card, each atomically: a folder with a card always has the weights it describes."""
    from safetensors.torch import save_file

    folder = Path(folder)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        # safetensors refuses tensors that share memory; contiguous copies are cheap at these sizes.
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}, str(tmp))
    write_json_atomic(card.to_json(), folder / CARD_FILE)
    return folder


def read_card(folder: str | Path, kind: str | None = None) -> ModelCard:
    """The typed card of a model folder, checked to be of ``kind`` when given."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise ModelFileError(f"{folder}: no {CARD_FILE} model card")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path}: model card is not valid JSON ({err})") from None
    if kind is not None and isinstance(data, dict) and data.get("kind") != kind:
        raise ModelFileError(f"{folder}: model card is for a {data.get('kind')!r}, not a {kind}")
    return ModelCard.from_json(data, str(path))


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


def load_network(folder: str | Path, kind: str):
    """``(network in eval mode with the folder's weights, its card)``."""
    card = read_card(folder, kind)
    try:
        net = card.build()
        net.load_state_dict(load_weights(folder), strict=True)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{folder}: weights do not fit the card's network ({str(err).splitlines()[0]})") from None
    return net.eval(), card


def data_hash(*items) -> str:
    """Short hash of what trained a model, for its card: binary arrays (shape and bytes) or other values
    (their text), in the order given."""
    h = hashlib.sha256()
    for item in items:
        if item is None:
            h.update(b"none")
        elif isinstance(item, np.ndarray):  # binary masks and crops: as uint8, the hash 0.1 wrote
            a = np.ascontiguousarray(item, dtype=np.uint8)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        else:
            h.update(repr(item).encode())
    return h.hexdigest()[:16]
