"""Untrusted model files: pickled payloads are refused, cards are validated before use."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rayspine.io.cards import ModelCard, ModelFileError, data_hash, load_weights, read_card, save_model

PACKAGE = Path(__file__).resolve().parents[2] / "rayspine"
CARD = ModelCard(kind="test", architecture="none", kwargs={}, spacing_mm=(1.0, 1.0, 1.0))


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_safetensors_round_trip(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    save_model(tmp_path, state, CARD)
    back = load_weights(tmp_path)
    assert torch.equal(back["w"], state["w"]) and read_card(tmp_path) == CARD


def test_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "evil": Payload(str(marker))}, tmp_path / "model.pt")
    with pytest.raises(ModelFileError, match="refused"):
        load_weights(tmp_path)
    assert not marker.exists()


def test_corrupt_weights_and_bad_cards_are_clear_errors(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ModelFileError, match="unreadable"):
        load_weights(tmp_path)
    with pytest.raises(ModelFileError, match="no model.json"):
        read_card(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_card(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"kind": "segmenter"}))
    with pytest.raises(ModelFileError, match="architecture"):
        read_card(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({**CARD.to_json(), "kind": "autoencoder"}))
    with pytest.raises(ModelFileError, match=r"lacks \['bottleneck', 'crop_size'\]"):
        read_card(tmp_path)
    with pytest.raises(ModelFileError, match="not a segmenter"):
        read_card(tmp_path, "segmenter")


def test_no_unsafe_torch_load_in_the_package():
    offenders = [p for p in PACKAGE.rglob("*.py") if "weights_only=False" in p.read_text()]
    loads = [p for p in PACKAGE.rglob("*.py") for line in p.read_text().splitlines() if "torch.load(" in line and "weights_only=True" not in line]
    assert offenders == [] and loads == []


def test_data_hash_follows_the_content_of_arrays_and_values():
    a = np.zeros((2, 4, 4, 4), np.uint8)
    b = a.copy()
    b[1, 2, 2, 2] = 1
    assert data_hash(a) == data_hash(a.copy()) and data_hash(a) != data_hash(b)
    assert data_hash(("1_t1", 10, 5), ("2_t1", 11, 6)) != data_hash(("1_t1", 10, 5), ("2_t1", 12, 6))
    assert data_hash(a, None) != data_hash(a) and len(data_hash(a)) == 16
