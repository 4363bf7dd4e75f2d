"""The CVAE edit: z is encoded with the image's own attributes and decoded with the new ones;
a tiny trained CVAE really changes the class it draws."""

from __future__ import annotations

import pytest
import torch

from pyro_gen.errors import ConfigError, DataError
from pyro_gen.infer import Trainer
from pyro_gen.latent.relabel import change_attributes
from pyro_gen.models import CVAE, VAE

ATTRS = [
    {"name": "side", "kind": "categorical", "values": ["left", "right"]},
    {"name": "level", "kind": "continuous", "loc": 0.0, "scale": 1.0, "low": -3.0, "high": 3.0},
]


def tiny(latent_dim: int = 2) -> CVAE:
    torch.manual_seed(0)
    return CVAE(data_shape=(8,), latent_dim=latent_dim, hidden=(16,), attributes=ATTRS)


def test_encoded_with_the_old_attributes_and_decoded_with_the_new():
    model = tiny().eval()
    x = torch.bernoulli(torch.full((5, 8), 0.5))
    old = {"side": torch.tensor([0, 0, 1, 0, 1]), "level": torch.linspace(-1, 1, 5)}
    seen = {}

    def spy(module, inputs, output):
        seen["z"], seen["y"] = inputs

    handle = model.decoder.register_forward_hook(spy)
    try:
        out = change_attributes(model, x, old, {"side": "right"})
    finally:
        handle.remove()
    loc, _ = model.encode(x, **old)
    assert torch.allclose(seen["z"], loc)  # z = E_q[z | x, y_old]
    want = model.encode_attributes({"side": torch.ones(5, dtype=torch.long), "level": old["level"]})
    assert torch.equal(seen["y"], want)  # side changed for every image, level kept per image
    assert torch.allclose(out, model.decode(loc, {"side": 1, "level": old["level"]}))
    # per-image new values work too, and the images change with y
    per_image = change_attributes(model, x, old, {"side": torch.tensor([1, 1, 0, 1, 0])})
    assert not torch.allclose(per_image, change_attributes(model, x, old, {"side": old["side"]}))


def test_names_and_values_are_checked():
    model = tiny()
    x = torch.zeros(2, 8)
    old = {"side": torch.tensor([0, 1]), "level": torch.zeros(2)}
    with pytest.raises(ConfigError, match="unknown attribute 'sid'.*left, right"):
        change_attributes(model, x, old, {"sid": "right"})
    with pytest.raises(DataError, match="valid: left, right"):
        change_attributes(model, x, old, {"side": "up"})
    with pytest.raises(DataError, match=r"\[-3, 3\]"):
        change_attributes(model, x, old, {"level": 9})
    with pytest.raises(ConfigError, match="at least one attribute"):
        change_attributes(model, x, old, {})
    with pytest.raises(ConfigError, match="does not condition on attributes"):
        change_attributes(VAE(data_shape=(8,), latent_dim=2, hidden=(8,)), x, {}, {"side": 1})


def test_a_trained_cvae_draws_the_side_it_is_told():
    # side 0 lights pixels 0-3, side 1 pixels 4-7; z has nothing to explain but pixel noise
    g = torch.Generator().manual_seed(0)
    n = 256
    side = torch.randint(2, (n,), generator=g)
    probs = torch.full((n, 8), 0.05)
    probs[side == 0, :4] = 0.95
    probs[side == 1, 4:] = 0.95
    x = torch.bernoulli(probs, generator=g)
    model = tiny(latent_dim=1)
    data = {"x": x, "side": side, "level": torch.zeros(n)}
    Trainer(model, epochs=25, batch_size=64, lr=2e-2, progress=False, seed=0).fit(data)
    model.eval()
    test = x[:64]
    old = {"side": side[:64], "level": torch.zeros(64)}
    flipped = change_attributes(model, test, old, {"side": 1 - old["side"]})
    judged = (flipped[:, 4:].mean(1) > flipped[:, :4].mean(1)).long()  # brighter half
    assert (judged == 1 - old["side"]).float().mean() > 0.95
    kept = change_attributes(model, test, old, {"side": old["side"]})
    assert ((kept[:, 4:].mean(1) > kept[:, :4].mean(1)).long() == old["side"]).all()
