"""Untrusted model files: pickled payloads are refused, cards are validated before use."""

import json
import os
from pathlib import Path

import pytest
import torch

from rayspine.io.models import ModelFileError, load_card, load_weights, save_model

PACKAGE = Path(__file__).resolve().parents[1] / "rayspine"


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_safetensors_round_trip(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    save_model(tmp_path, state, {"kind": "test", "architecture": "none"})
    back = load_weights(tmp_path)
    assert torch.equal(back["w"], state["w"]) and load_card(tmp_path)["kind"] == "test"


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
        load_card(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_card(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"kind": "segmenter"}))
    with pytest.raises(ModelFileError, match="architecture"):
        load_card(tmp_path)


def test_no_unsafe_torch_load_in_the_package():
    offenders = [p for p in PACKAGE.rglob("*.py") if "weights_only=False" in p.read_text()]
    loads = [p for p in PACKAGE.rglob("*.py") for line in p.read_text().splitlines() if "torch.load(" in line and "weights_only=True" not in line]
    assert offenders == [] and loads == []
