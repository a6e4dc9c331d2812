import pytest
import torch

from shrinktune.errors import ConfigError
from shrinktune.models.autoencoder import Autoencoder, autoencoder_widths, build_bottleneck


def test_widths_step_evenly_from_width_to_latent():
    assert autoencoder_widths(768, 384) == [768, 640, 512, 384]


@pytest.mark.parametrize("latent", [0, -4, 800])
def test_impossible_latent_is_refused(latent):
    with pytest.raises(ConfigError, match="latent width must be in 1..768"):
        autoencoder_widths(768, latent)


def test_mlp_is_paper_shaped_and_keeps_sequence_shape():
    ae = Autoencoder(48, 16)
    kinds = [type(m).__name__ for m in ae.encoder]
    assert kinds == ["Linear", "FeatureBatchNorm", "ReLU", "Linear", "FeatureBatchNorm", "ReLU", "Linear", "Tanh"]
    states = torch.randn(3, 7, 48)  # (batch, src_len, width)
    ae.train()
    assert ae(states).shape == (3, 7, 48)
    assert ae.encoder(states).shape == (3, 7, 16)
    assert ae.encoder(states).abs().max() <= 1  # Tanh at the latent


def test_linear_kind_is_one_layer():
    bottleneck = build_bottleneck({"kind": "linear", "widths": [32, 8]})
    assert len(bottleneck) == 1 and bottleneck[0].weight.shape == (8, 32)


def test_unknown_kind_is_refused():
    with pytest.raises(ConfigError, match="bottleneck kind must be one of"):
        build_bottleneck({"kind": "conv", "widths": [32, 8]})
