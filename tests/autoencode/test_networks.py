"""A variant autoencoder is one new file in autoencode/networks/, found by name by `train-ae --model`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import rayspine.autoencode.networks as networks
from rayspine.autoencode.infer import load_autoencoder
from rayspine.cli import app
from rayspine.io import cards
from tests.autoencode.test_sweep import _crop_folder
from tests.autoencode.test_train import disc_phantoms

# What a researcher would write: a variational autoencoder on the paper's encoder and decoder, in the
# way MONAI's VarAutoEncoder subclasses its AutoEncoder.
VARIANT = '''
import torch
from torch import nn

from rayspine.autoencode.networks.conv import DiscAutoencoder
from rayspine.io.cards import AUTOENCODER, register


@register(AUTOENCODER, "test_vae")
class VariationalDiscAutoencoder(DiscAutoencoder):
    def __init__(self, bottleneck, channels=(16, 32, 64, 128), crop_size=64):
        super().__init__(bottleneck, channels, crop_size)
        self.to_log_var = nn.Linear(self.to_code.in_features, self.bottleneck)

    def loss(self, x):
        features = torch.flatten(self.encoder(x), 1)
        mean, log_var = self.to_code(features), self.to_log_var(features)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        bce = nn.functional.binary_cross_entropy_with_logits(self.decode(z).float(), x)
        return bce + 1e-4 * torch.mean(-0.5 * (1 + log_var - mean**2 - log_var.exp()))
'''


@pytest.fixture
def variant_file():
    path = Path(networks.__file__).parent / "test_vae_variant.py"
    path.write_text(textwrap.dedent(VARIANT))
    try:
        assert "test_vae" in cards.registered(cards.AUTOENCODER, rescan=True)  # Ray's workers find it themselves
        yield path
    finally:
        path.unlink(missing_ok=True)
        cards.unregister(cards.AUTOENCODER, "test_vae")


def test_unknown_network_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"registered: \['conv'"):
        cards.network(cards.AUTOENCODER, "no_such_net")


def test_a_variant_in_one_new_file_trains_with_train_ae_model(variant_file, tmp_path, ray_local):
    torch.set_num_threads(1)
    crops = disc_phantoms(4, seed=5)
    folder = _crop_folder(tmp_path / "measured", {"s1": crops[:2], "s2": crops[2:]})
    result = CliRunner().invoke(app, ["train-ae", str(folder), "-o", str(tmp_path / "ae"), "--bottleneck", "3", "--max-epochs", "1", "--model", "test_vae"])
    assert result.exit_code == 0, result.output
    card = cards.read_card(tmp_path / "ae" / "bn3", cards.AUTOENCODER)
    assert card.architecture == "test_vae" and "to_log_var.weight" in cards.load_weights(tmp_path / "ae" / "bn3")
    model = load_autoencoder(tmp_path / "ae")
    assert type(model.net).__name__ == "VariationalDiscAutoencoder" and model.encode(crops).shape == (4, 3)
