"""A plain torch classifier/regressor body with a feature layer: an MLP for flat data, a small
conv net for images.

``features(x)`` is the last hidden layer ``[N, F]`` (the representation a judge's Fréchet
distance or a probe reads); ``forward(x)`` maps it linearly to ``out_features`` outputs (logits
or regression values; the caller decides what they mean).

>>> import torch
>>> net = Classifier((1, 16, 16), out_features=3, channels=(8, 16), hidden=32)
>>> net(torch.zeros(5, 1, 16, 16)).shape, net.features(torch.zeros(5, 1, 16, 16)).shape
(torch.Size([5, 3]), torch.Size([5, 32]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyro_gen.errors import ConfigError, ShapeError, did_you_mean
from pyro_gen.nn.heads import numel
from pyro_gen.nn.mlp import ACTIVATIONS, MLP

__all__ = ["Classifier", "CLASSIFIER_NETWORKS"]

CLASSIFIER_NETWORKS = ("auto", "mlp", "conv")


class Classifier(nn.Module):
    """x ``[N, *data_shape]`` -> outputs ``[N, out_features]``, through features ``[N, hidden]``.

    Args:
        data_shape: one datapoint's shape; ``[C, H, W]`` with ``H, W >= 8`` is an image.
        out_features: number of outputs (sum of the classes/units of every head).
        network: ``"conv"`` (stride-2 convolutions, then a dense layer), ``"mlp"`` or ``"auto"``
            (conv for images, MLP otherwise).
        hidden: width of the feature layer (for the MLP, widths ``hidden_layers`` before it).
        channels: channels of the conv layers (each halves the resolution).
        hidden_layers: widths of the MLP's earlier layers (the MLP only).
        activation: ``"relu"``, ``"tanh"``, ``"elu"`` or ``"softplus"``.
        dropout: dropout probability before the output layer (0: none).
        convs_per_stage: convolutions per resolution (the conv net only): ``k - 1`` 3x3
            convolutions of stride 1, then one of stride 2.

    Raises ConfigError (unknown network/activation, bad sizes) and ShapeError (conv on
    non-image data, or an input of the wrong shape).
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        out_features: int,
        network: str = "auto",
        hidden: int = 128,
        channels: Sequence[int] = (32, 64),
        hidden_layers: Sequence[int] = (256,),
        activation: str = "relu",
        dropout: float = 0.0,
        convs_per_stage: int = 1,
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        if network not in CLASSIFIER_NETWORKS:
            raise ConfigError(
                f"unknown classifier network {network!r}; choose one of {CLASSIFIER_NETWORKS}."
                + did_you_mean(str(network), CLASSIFIER_NETWORKS)
            )
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}."
                + did_you_mean(str(activation), ACTIVATIONS)
            )
        if int(out_features) < 1 or int(hidden) < 1:
            raise ConfigError(
                f"out_features and hidden must be >= 1; got {out_features} and {hidden}."
            )
        is_image = len(self.data_shape) == 3 and min(self.data_shape[1:]) >= 8
        if network == "auto":
            network = "conv" if is_image else "mlp"
        if network == "conv" and not is_image:
            raise ShapeError(
                f"a conv classifier needs images [C, H, W] with H, W >= 8; got data_shape "
                f"{list(self.data_shape)}. Use network='mlp'."
            )
        self.network = network
        act = ACTIVATIONS[activation]
        if network == "conv":
            layers: list[nn.Module] = []
            c = self.data_shape[0]
            for c_out in channels:
                for _ in range(int(convs_per_stage) - 1):  # stride-1 convolutions first
                    layers += [nn.Conv2d(c, int(c_out), 3, padding=1), act()]
                    c = int(c_out)
                layers += [nn.Conv2d(c, int(c_out), 3, stride=2, padding=1), act()]
                c = int(c_out)
            body = nn.Sequential(*layers, nn.Flatten())
            with torch.no_grad():
                flat = body(torch.zeros(1, *self.data_shape)).shape[1]
            self.body = nn.Sequential(body, nn.Linear(flat, int(hidden)), act())
        else:
            self.body = nn.Sequential(
                nn.Flatten(),
                MLP(
                    numel(self.data_shape),
                    tuple(int(h) for h in hidden_layers),
                    int(hidden),
                    activation,
                ),
                act(),
            )
        self.dropout = nn.Dropout(float(dropout))
        self.out = nn.Linear(int(hidden), int(out_features))
        self.num_features = int(hidden)

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ShapeError(
                f"the classifier was built for datapoints of shape {list(self.data_shape)}, i.e. "
                f"x of shape [N, {', '.join(map(str, self.data_shape))}]; got {list(x.shape)}."
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature layer ``[N, hidden]`` (after its activation)."""
        self._check(x)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``[N, out_features]`` (logits or regression values)."""
        return self.out(self.dropout(self.features(x)))
