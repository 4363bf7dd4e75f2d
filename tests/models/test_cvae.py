"""The CVAE: attributes are observed sites that set what the decoder draws; partly observed
attributes go through poutine.mask (values at masked rows never matter); bad names and values
give errors that list the valid ones; the shared model contract."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine

from pyro_gen.data import make_shapes
from pyro_gen.data.shapes import SHAPE_NAMES
from pyro_gen.errors import ConfigError, DataError
from pyro_gen.evaluate import evaluate_elbo
from pyro_gen.models import CVAE, attributes_from_dataset
from tests.contract import ModelContract

ATTRS = [
    {"name": "shape", "kind": "categorical", "values": ["a", "b", "c"]},
    {"name": "flag", "kind": "binary", "p": 0.3},
    {"name": "size", "kind": "continuous", "loc": 1.0, "scale": 0.5, "low": 0.0, "high": 2.0},
]


def data(n=64, d=12, seed=0, mask=False):
    g = torch.Generator().manual_seed(seed)
    out = {
        "x": torch.bernoulli(torch.full((n, d), 0.3), generator=g),
        "shape": torch.randint(3, (n,), generator=g),
        "flag": torch.bernoulli(torch.full((n,), 0.3), generator=g),
        "size": 1.0 + 0.5 * torch.rand(n, generator=g),
    }
    if mask:
        out["shape_mask"] = torch.rand(n, generator=g) < 0.5
        out["size_mask"] = torch.rand(n, generator=g) < 0.5
    return out


class TestCVAEContract(ModelContract):
    def make_model(self):
        torch.manual_seed(0)
        return CVAE(data_shape=(12,), attributes=ATTRS, latent_dim=3, hidden=(16,))

    def make_data(self):
        return data(self.num_data)


@pytest.mark.slow  # the contract again, for the conv networks and masked attributes
class TestConvCVAEWithMissingContract(ModelContract):
    def make_model(self):
        torch.manual_seed(0)
        return CVAE(
            data_shape=(1, 8, 8),
            attributes=ATTRS,
            latent_dim=2,
            network="conv",
            channels=(4, 8),
            hidden=(16,),
            missing=True,
        )

    def make_data(self):
        d = data(self.num_data, 64, mask=True)
        d["x"] = d["x"].reshape(-1, 1, 8, 8)
        return d


def hand_set_model() -> CVAE:
    """A CVAE whose decoder ignores z and lights pixel k exactly when shape = k (logit ±10)."""
    m = CVAE(data_shape=(6,), attributes=ATTRS[:1], latent_dim=2, hidden=(3,), condition="input")
    first, last = m.decoder.net.net[0], m.decoder.net.net[-1]
    with torch.no_grad():
        first.weight.zero_(), first.bias.zero_(), last.weight.zero_()
        first.weight[:, 2:] = torch.eye(3)  # hidden k = one-hot k (z is ignored)
        last.weight[:3] = 20 * torch.eye(3)
        last.bias.fill_(-10.0)
    return m


def test_the_asked_attribute_sets_the_image():
    m = hand_set_model()
    for k, name in enumerate(["a", "b", "c"]):
        for asked in (name, k, str(k)):
            img = m.generate(5, {"shape": asked}, seed=1, mean=True)
            expect = torch.full((5, 6), torch.sigmoid(torch.tensor(-10.0)).item())
            expect[:, k] = torch.sigmoid(torch.tensor(10.0)).item()
            torch.testing.assert_close(img, expect)
    # a tensor of per-sample values
    img = m.generate(3, {"shape": torch.tensor([2, 0, 1])}, mean=True)
    assert img[:, :3].argmax(1).tolist() == [2, 0, 1]


def test_observed_values_are_what_the_model_and_decoder_see():
    m = CVAE(data_shape=(12,), attributes=ATTRS, latent_dim=3, hidden=(16,))
    d = data(10)
    x, kw = d["x"], {k: v for k, v in d.items() if k != "x"}
    tr = poutine.trace(m.model).get_trace(x, **kw)
    for name in ("shape", "flag", "size"):
        assert tr.nodes[name]["is_observed"]
        assert torch.equal(tr.nodes[name]["value"], kw[name].to(tr.nodes[name]["value"].dtype))
    # log p(y) of the observed sites, exactly: uniform over 3 classes, Bernoulli(0.3), N(1, .5²)
    tr.compute_log_prob()
    torch.testing.assert_close(tr.nodes["shape"]["log_prob"], torch.full((10,), -math.log(3)))
    p = torch.where(kw["flag"] > 0, torch.tensor(0.3), torch.tensor(0.7))
    torch.testing.assert_close(tr.nodes["flag"]["log_prob"], p.log())
    normal = torch.distributions.Normal(1.0, 0.5).log_prob(kw["size"])
    torch.testing.assert_close(tr.nodes["size"]["log_prob"], normal)
    # the decoder's input: changing an observed attribute changes p(x | z, y)
    other = dict(kw, shape=(kw["shape"] + 1) % 3)
    a = evaluate_elbo(m, x, **kw, seed=0).elbo
    b = evaluate_elbo(m, x, **other, seed=0).elbo
    assert not torch.allclose(a, b)


def test_masked_rows_never_matter_and_are_latent():
    torch.manual_seed(0)
    m = CVAE(data_shape=(12,), attributes=ATTRS, latent_dim=3, hidden=(16,), missing=True)
    d = data(20, mask=True)
    x, kw = d["x"], {k: v for k, v in d.items() if k != "x"}
    mask = kw["shape_mask"]
    garbage = dict(kw, shape=torch.where(mask, kw["shape"], torch.full_like(kw["shape"], -1)))
    garbage["size"] = torch.where(kw["size_mask"], kw["size"], torch.tensor(float("nan")))
    a = evaluate_elbo(m, x, **kw, seed=3).elbo
    b = evaluate_elbo(m, x, **garbage, seed=3).elbo
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    guide = poutine.trace(m.guide).get_trace(x, **garbage)
    tr = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x, **garbage)
    assert tr.nodes["shape"]["is_observed"] and torch.equal(tr.nodes["shape"]["mask"], mask)
    assert not tr.nodes["shape_missing"]["is_observed"]
    assert torch.equal(tr.nodes["shape_missing"]["mask"], ~mask)
    assert "shape_missing" in guide.nodes and "flag_missing" not in guide.nodes
    # an attribute left out altogether is latent in every row
    without = {k: v for k, v in kw.items() if k != "flag"}
    tr = poutine.trace(m.guide).get_trace(x, **without)
    assert not tr.nodes["flag"]["is_observed"] and tr.nodes["flag"]["value"].shape == (20,)


def test_bad_names_and_values_list_the_valid_ones():
    m = CVAE(data_shape=(12,), attributes=ATTRS, latent_dim=3, hidden=(16,))
    with pytest.raises(ConfigError, match=r"shape \(categorical: a, b, c\); flag .*size"):
        m.generate(2, {"shap": "a"})
    with pytest.raises(DataError, match=r"valid: a, b, c"):
        m.generate(2, {"shape": "d"})
    with pytest.raises(DataError, match=r"0 or 1"):
        m.generate(2, {"flag": 2})
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        m.generate(2, {"size": "big"})
    d = data(8)
    x, kw = d["x"], {k: v for k, v in d.items() if k != "x"}
    with pytest.raises(DataError, match=r"classes are 0\.\.2 \(a, b, c\)"):
        m.model(x, **dict(kw, shape=kw["shape"] + 3))
    with pytest.raises(ConfigError, match="missing=True"):
        m.model(x, **{k: v for k, v in kw.items() if k != "flag"})
    with pytest.raises(ConfigError, match="unknown attribute 'colour'"):
        m.guide(x, **kw, colour=kw["flag"])
    with pytest.raises(ConfigError, match="kind"):
        CVAE(data_shape=(12,), attributes=[{"name": "s", "kind": "nominal"}])
    with pytest.raises(ConfigError, match="at least one attribute"):
        CVAE(data_shape=(12,))


def test_attributes_from_the_shapes_data():
    ds = make_shapes(num_train=64, num_valid=0, num_test=0, size=16)
    attrs = attributes_from_dataset(ds)
    assert [a["name"] for a in attrs] == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    assert attrs[0]["kind"] == "categorical" and attrs[0]["values"] == list(SHAPE_NAMES)
    assert attrs[1]["kind"] == "continuous" and attrs[1]["low"] == 0.5 and attrs[1]["high"] <= 1
    chosen = attributes_from_dataset(ds, ["is_heart", "scale"])
    assert [(a["name"], a["kind"]) for a in chosen] == [
        ("is_heart", "binary"),
        ("scale", "continuous"),
    ]
    with pytest.raises(ConfigError, match="it has: shape, scale"):
        attributes_from_dataset(ds, ["colour"])
    m = CVAE(data_shape=ds.image_shape, attributes=attrs, latent_dim=2, hidden=(8,))
    batch = m.batch_from_dataset(ds, "train")
    assert torch.equal(batch["shape"], ds.labels["train"])
    assert torch.equal(batch["scale"], ds.attribute("train", "scale"))
    pyro.clear_param_store()


LAYERS = (torch.nn.Linear, torch.nn.ConvTranspose2d)


def _zero_all_but_the_last_layers_y_weights(m: CVAE) -> None:
    layers = [mod for mod in m.decoder.modules() if isinstance(mod, LAYERS)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.zero_(), layer.bias.zero_()
        k = m.condition_dim
        last = layers[-1]
        if isinstance(last, torch.nn.Linear) and last.in_features > k:
            last.weight[:, -k:] = 1.0  # [h, y] -> out: the y columns
        elif isinstance(last, torch.nn.ConvTranspose2d):
            last.weight[-k:] = 1.0  # the y channels


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_condition_every_layer_feeds_y_to_the_last_layer(network):
    """condition="every": y is an input of every decoder layer, so it sets the output even
    when all hidden units are dead (zero weights) — with condition="input" it cannot."""
    shape = (1, 8, 8) if network == "conv" else (12,)
    kw = dict(data_shape=shape, attributes=ATTRS, latent_dim=2, hidden=(16,), channels=(4, 8))
    y_a, y_b = {"shape": "a", "flag": 0, "size": 1.0}, {"shape": "b", "flag": 1, "size": 1.5}
    z = torch.randn(3, 2)
    every = CVAE(**kw, network=network, condition="every")
    _zero_all_but_the_last_layers_y_weights(every)
    a, b = every.decode(z, y_a, mean=False), every.decode(z, y_b, mean=False)
    assert not torch.allclose(a, b)
    assert torch.allclose(a, every.decode(torch.randn(3, 2), y_a, mean=False))  # z is ignored
    first = next(mod for mod in every.decoder.modules() if isinstance(mod, torch.nn.Linear))
    assert first.in_features == 2 + every.condition_dim  # [z, y]
    once = CVAE(**kw, network=network, condition="input")
    _zero_all_but_the_last_layers_y_weights(once)
    assert torch.equal(once.decode(z, y_a, mean=False), once.decode(z, y_b, mean=False))


def test_an_unknown_condition_is_refused():
    with pytest.raises(ConfigError, match="unknown condition 'all'.*'input', 'every'"):
        CVAE(data_shape=(12,), attributes=ATTRS, condition="all")


def test_a_periodic_attribute_is_encoded_by_its_harmonics():
    angle = {"name": "angle", "kind": "continuous", "loc": 3.0, "scale": 2.0, "period": 2 * math.pi}
    m = CVAE(data_shape=(6,), attributes=[ATTRS[0], angle], latent_dim=2, hidden=(4,))
    assert m.condition_dim == 3 + 2 * 4  # one-hot + cos, sin of k·angle, k = 1..4
    v = torch.tensor([0.0, math.pi / 2, 1.0])
    y = m.encode_attributes({"shape": torch.tensor([0, 1, 2]), "angle": v})
    k = torch.arange(1, 5.0)
    torch.testing.assert_close(y[:, 3:7], torch.cos(v[:, None] * k))
    torch.testing.assert_close(y[:, 7:], torch.sin(v[:, None] * k))
    # 0 and 2π are the same input; a square's quarter turn changes only the k < 4 harmonics
    same = m.encode_attributes({"shape": torch.tensor([0]), "angle": torch.tensor([2 * math.pi])})
    torch.testing.assert_close(same[0], y[0], atol=1e-5, rtol=0)
    assert torch.allclose(y[1, [6, 10]], y[0, [6, 10]], atol=1e-6)  # cos 4·π/2 = cos 0
    with pytest.raises(ConfigError, match="period > 0"):
        CVAE(data_shape=(6,), attributes=[dict(angle, period=0.0)])


def test_the_shapes_orientation_is_periodic():
    ds = make_shapes(num_train=64, num_valid=0, num_test=0, size=16, seed=0)
    specs = {a["name"]: a for a in attributes_from_dataset(ds)}
    assert specs["orientation"]["period"] == pytest.approx(2 * math.pi)
    assert "period" not in specs["scale"]


def test_a_run_saved_before_condition_existed_loads_as_it_was_built(tmp_path):
    """config.json of an older CVAE run has no "condition": load_model rebuilds the decoder that
    run had ([z, y] at the input, SAVED_DEFAULTS) instead of the new default, and its weights
    load; a new run keeps what it was saved with."""
    import json

    from pyro_gen.models import CVAE, load_model, save_model

    spec = [{"name": "c", "kind": "categorical", "values": ["a", "b"]}]
    old = CVAE(data_shape=(1, 4, 4), attributes=spec, latent_dim=2, hidden=(8,), condition="input")
    save_model(old, tmp_path / "old")
    cfg_path = tmp_path / "old" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["model"]["args"]["condition"]  # as written before the argument existed
    cfg_path.write_text(json.dumps(cfg))
    loaded = load_model(tmp_path / "old")
    assert loaded.config["condition"] == "input"
    for (k, a), b in zip(old.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    new = CVAE(data_shape=(1, 4, 4), attributes=spec, latent_dim=2, hidden=(8,))
    save_model(new, tmp_path / "new")
    assert load_model(tmp_path / "new").config["condition"] == "every"


def test_missing_trains_q_y_given_x_on_labelled_rows_through_alpha():
    """missing=True: α·log q(y_a|x) on the rows where y_a is observed (train mode only, scaled
    by α, masked like the attribute); without it (α = 0) q(y|x) gets no gradient at all when
    every row is labelled, so it would classify at chance after any amount of training."""
    from pyro_gen.infer import Trainer

    spec = ATTRS[:1]
    g = torch.Generator().manual_seed(0)
    shape = torch.randint(3, (96,), generator=g)
    x = torch.nn.functional.one_hot(shape, 3).float().repeat(1, 4)  # the class is in the image
    x = (x + 0.05 * torch.rand(x.shape, generator=g)).clamp(0, 1).bernoulli(generator=g)
    d = {"x": x, "shape": shape}
    m = CVAE(data_shape=(12,), attributes=spec, latent_dim=2, hidden=(16,), missing=True)
    tr = poutine.trace(m.model).get_trace(x, shape=shape, shape_mask=shape > 0)
    site = tr.nodes["shape_classify"]
    assert site["is_observed"] and site["scale"] == m.alpha == 50.0
    assert torch.equal(site["mask"], shape > 0)
    m.eval()
    assert "shape_classify" not in poutine.trace(m.model).get_trace(x, shape=shape).nodes
    m.train()

    def accuracy(model):
        with torch.no_grad():
            return float((model._q_attribute(x)["shape"].probs.argmax(-1) == shape).float().mean())

    torch.manual_seed(0)
    for alpha, check in ((0.0, "unchanged"), (50.0, "learned")):
        m = CVAE(
            data_shape=(12,),
            attributes=spec,
            latent_dim=2,
            hidden=(16,),
            missing=True,
            alpha=alpha,
        )
        before = [p.detach().clone() for p in m.attribute_net.parameters()]
        Trainer(m, max_steps=60, batch_size=32, lr=1e-2, progress=False).fit(d)
        after = list(m.attribute_net.parameters())
        if check == "unchanged":
            assert all(torch.equal(a, b) for a, b in zip(before, after))
        else:
            assert accuracy(m) > 0.9
    with pytest.raises(ConfigError, match="alpha"):
        CVAE(data_shape=(12,), attributes=spec, missing=True, alpha=-1.0)


def test_a_periodic_value_one_period_on_is_the_same_angle():
    """orientation = 7 rad on a 2π-periodic attribute is 7 − 2π; a value that no turn brings
    into the training range is still refused, naming the range."""
    full = {"name": "angle", "kind": "continuous", "loc": 3.0, "scale": 2.0, "period": 2 * math.pi}
    full.update(low=0.0, high=2 * math.pi)
    half = dict(full, name="half", low=0.0, high=math.pi)
    m = CVAE(data_shape=(6,), attributes=[full, half], latent_dim=2, hidden=(4,))
    v = m.parse_attributes({"angle": 7.0, "half": -2 * math.pi + 1.0}, 2)
    torch.testing.assert_close(v["angle"], torch.full((2,), 7.0 - 2 * math.pi))
    torch.testing.assert_close(v["half"], torch.full((2,), 1.0))
    with pytest.raises(DataError, match=r"\[0, 3.14159\]"):
        m.parse_attributes({"half": 4.0}, 1)


def test_a_missing_attribute_keeps_its_analytic_kl():
    """The model draws y before z, as the guide does (q(y|x) then q(z|x, y)), so the KL of a
    missing y (and of z) is the closed form, not the noisier log q − log p at the draws."""
    from pyro_gen.evaluate.terms import pointwise_terms

    torch.manual_seed(0)
    m = CVAE(data_shape=(12,), attributes=ATTRS, latent_dim=3, hidden=(16,), missing=True).eval()
    d = data(16, mask=True)
    x, kw = d.pop("x"), d
    for given in (kw, {k: v for k, v in kw.items() if not k.startswith("shape")}):
        t = pointwise_terms(m.model, m.guide, x, **given)
        assert len(t.kl_method) == 3 and set(t.kl_method.values()) == {"analytic"}, t.kl_method


def test_a_beta_zero_cvae_is_not_called_a_bound_anywhere(tmp_path, capsys):
    from pyro_gen.cli import main

    tiny = "--num-train 64 --num-valid 32 --num-test 32 --image-size 16 --batch-size 16".split()
    run = tmp_path / "run"
    argv = ["train", *tiny, "--model", "cvae", "--beta", "0", "--hidden", "16", "--epochs", "1"]
    assert main([*argv, "--no-progress", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "reconstruction-only 'ELBO' (not a bound)" in out and "; a bound on" not in out
    assert "(a bound on log p(x" not in (run / "report.html").read_text()
