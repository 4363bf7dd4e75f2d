"""The classifier network: conv for images, MLP otherwise; features before the output layer."""

from __future__ import annotations

import pytest
import torch

from pyro_gen.errors import ConfigError, ShapeError
from pyro_gen.nn.classifier import Classifier


def test_auto_picks_conv_for_images_and_mlp_for_flat_data():
    assert Classifier((1, 16, 16), 3).network == "conv"
    assert Classifier((12,), 3).network == "mlp"
    assert Classifier((1, 4, 4), 3).network == "mlp"  # too small for convolutions


def test_output_is_a_linear_map_of_the_features():
    net = Classifier((10,), 4, hidden=6, hidden_layers=(8,))
    x = torch.randn(7, 10)
    torch.testing.assert_close(net(x), net.features(x) @ net.out.weight.T + net.out.bias)


def test_errors():
    with pytest.raises(ConfigError, match="'mlp'"):
        Classifier((10,), 2, network="mpl")
    with pytest.raises(ShapeError, match="network='mlp'"):
        Classifier((10,), 2, network="conv")
    with pytest.raises(ShapeError, match=r"\[N, 10\]"):
        Classifier((10,), 2)(torch.zeros(3, 9))


def test_convs_per_stage_adds_stride_one_convolutions():
    net = Classifier((1, 16, 16), 3, channels=(4, 8), convs_per_stage=2, hidden=5)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (1, 1), (2, 2)]
    assert net.features(torch.zeros(2, 1, 16, 16)).shape == (2, 5)
