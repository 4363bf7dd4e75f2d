"""SSVAE (Kingma et al. 2014 M2): the enumerated label is summed out exactly, parallel and
sequential enumeration agree, masked labels contribute nothing, the classification term is
weighted by α, and the family passes the model contract."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_gen.errors import ConfigError, DataError, ShapeError
from pyro_gen.infer import Trainer
from pyro_gen.models import SSVAE, build_model
from tests.contract import ModelContract

K = 3


@pytest.fixture(autouse=True)
def _validation():
    pyro.clear_param_store()
    with pyro.validation_enabled(True):
        yield


def small(**kw) -> SSVAE:
    torch.manual_seed(0)
    args = dict(
        data_shape=(6,),
        num_classes=K,
        latent_dim=2,
        hidden=(8,),
        classifier_layers=(8,),
        classifier_hidden=8,
        alpha=0.0,
    )
    return SSVAE(**{**args, **kw})


def batch(n: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((n, 6), 0.4), generator=g)
    y = torch.randint(K, (n,), generator=g)
    observed = torch.tensor([True, False, True, False, False][:n])
    return x, y, observed


def z_free(m: SSVAE) -> SSVAE:
    """q(z|x,y) = p(z) = N(0, I) and a decoder that ignores z: every term but y is exact."""
    with torch.no_grad():
        head = m.encoder.head
        head.loc.weight.zero_(), head.loc.bias.zero_(), head.raw_scale.weight.zero_()
        head.raw_scale.bias.fill_(math.log(math.expm1(1.0 - head.min_scale)))
        m.decoder.net[0].weight[:, : m.latent_dim].zero_()
    return m


def hand_elbo(m: SSVAE, x, y, observed) -> torch.Tensor:
    """Σ_n ELBO_n for a z-free model: labelled log p(x|y) + log p(y); unlabelled
    Σ_y q(y|x) [log p(x|y) + log p(y) − log q(y|x)] (Kingma et al. eq. 7), by hand."""
    with torch.no_grad():
        onehot = torch.eye(K)
        z = torch.zeros(K, m.latent_dim)
        log_px = torch.stack(
            [
                m.likelihood(
                    m.decoder(z[k].expand(len(x), -1), onehot[k].expand(len(x), -1))
                ).log_prob(x)
                for k in range(K)
            ],
            -1,
        )  # [N, K]
        log_py = -math.log(K)
        log_q = torch.log_softmax(m.classifier(x), -1)
        labelled = log_px.gather(1, y[:, None]).squeeze(1) + log_py
        unlabelled = (log_q.exp() * (log_px + log_py - log_q)).sum(-1)
        return torch.where(observed, labelled, unlabelled).sum()


def enum_loss(m, x, y, observed, mode="parallel", seed=0) -> float:
    m.enumerate = mode
    pyro.set_rng_seed(seed)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    return float(elbo.loss(m.model, m.guide, x, y=y, observed=observed))


# -- enumeration -----------------------------------------------------------------------------
def test_the_missing_label_is_marked_for_enumeration_in_training_only():
    m = small()
    x, y, observed = batch()
    tr = poutine.trace(m.guide).get_trace(x, y=y, observed=observed)
    assert tr.nodes["y_missing"]["infer"]["enumerate"] == "parallel"
    assert not tr.nodes["z"]["infer"].get("enumerate")  # continuous: sampled
    m.enumerate = "sequential"
    tr = poutine.trace(m.guide).get_trace(x, y=y, observed=observed)
    assert tr.nodes["y_missing"]["infer"]["enumerate"] == "sequential"
    m.eval()  # the evaluators draw it instead (they cannot replay an enumerated site)
    tr = poutine.trace(m.guide).get_trace(x, y=y, observed=observed)
    assert not tr.nodes["y_missing"]["infer"].get("enumerate")


def test_parallel_enumeration_really_enumerates():
    m = small()
    x, y, observed = batch()
    enum_guide = poutine.enum(m.guide, first_available_dim=-2)
    tr = poutine.trace(enum_guide).get_trace(x, y=y, observed=observed)
    value = tr.nodes["y_missing"]["value"]
    assert value.shape == (K, 1) and value.flatten().tolist() == list(range(K))
    assert tr.nodes["z"]["value"].shape == (K, len(x), m.latent_dim)


@pytest.mark.filterwarnings("ignore:y_missing")  # Pyro: a marked site under Trace_ELBO
def test_enum_loss_is_the_exact_sum_over_labels_and_seed_free():
    m = z_free(small())
    x, y, observed = batch()
    exact = -float(hand_elbo(m, x, y, observed))
    values = [enum_loss(m, x, y, observed, "parallel", seed) for seed in range(3)]
    assert values == pytest.approx([exact] * 3, abs=1e-4)
    # a sampled label (Trace_ELBO ignores the mark) gives other values, seed by seed
    sampled = []
    for seed in range(6):
        pyro.set_rng_seed(seed)
        sampled.append(float(Trace_ELBO().loss(m.model, m.guide, x, y=y, observed=observed)))
    assert max(abs(s - exact) for s in sampled) > 1e-2


def test_parallel_and_sequential_enumeration_agree():
    m = z_free(small())
    x, y, observed = batch()
    par = enum_loss(m, x, y, observed, "parallel")
    seq = enum_loss(m, x, y, observed, "sequential")
    assert par == pytest.approx(seq, abs=1e-4)


def test_enum_loss_with_sampled_z_matches_the_hand_sum_on_the_same_draws():
    """With z random: labelled rows average their K draws (q = p on the auxiliary copy),
    unlabelled rows weight draw k by q(k|x) and add the entropy of q(y|x)."""
    m = small()
    x, y, observed = batch()
    pyro.set_rng_seed(1)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    loss = float(elbo.loss(m.model, m.guide, x, y=y, observed=observed))
    pyro.set_rng_seed(1)
    tr = poutine.trace(poutine.enum(m.guide, first_available_dim=-2)).get_trace(
        x, y=y, observed=observed
    )
    z = tr.nodes["z"]["value"]  # [K, N, L]
    with torch.no_grad():
        n = len(x)
        terms = torch.zeros(K, n)
        for k in range(K):
            label = torch.where(observed, y, k)
            onehot = torch.nn.functional.one_hot(label, K).float()
            loc, scale = m.encoder(x, onehot)
            log_q_z = dist.Normal(loc, scale).log_prob(z[k]).sum(-1)
            log_p_z = dist.Normal(0.0, 1.0).log_prob(z[k]).sum(-1)
            log_px = m.likelihood(m.decoder(z[k], onehot)).log_prob(x)
            terms[k] = log_px + log_p_z - log_q_z - math.log(K)
        log_q = torch.log_softmax(m.classifier(x), -1).T  # [K, N]
        labelled = terms.mean(0)
        unlabelled = (log_q.exp() * (terms - log_q)).sum(0)
        expected = -float(torch.where(observed, labelled, unlabelled).sum())
    assert loss == pytest.approx(expected, abs=1e-3)


def test_masked_labels_contribute_nothing():
    m = small()
    x, y, observed = batch()
    other = torch.where(observed, y, (y + 1) % K)
    assert enum_loss(m, x, y, observed, seed=2) == enum_loss(m, x, other, observed, seed=2)
    # an observed label does count
    flipped = torch.where(observed, (y + 1) % K, y)
    assert enum_loss(m, x, y, observed, seed=2) != enum_loss(m, x, flipped, observed, seed=2)


def test_no_labels_at_all_equals_all_masked():
    m = small()
    x, y, _ = batch()
    none = torch.zeros(len(x), dtype=torch.bool)
    assert enum_loss(m, x, y, none, seed=4) == pytest.approx(enum_loss(m, x, None, None, seed=4))


def test_classification_term_is_alpha_times_log_q_on_labelled_rows():
    x, y, observed = batch()
    with_alpha = small(alpha=2.5)
    without = small(alpha=0.0)
    gap = enum_loss(with_alpha, x, y, observed, seed=0) - enum_loss(without, x, y, observed, seed=0)
    with torch.no_grad():
        log_q = torch.log_softmax(with_alpha.classifier(x), -1).gather(1, y[:, None]).squeeze(1)
    assert gap == pytest.approx(-2.5 * float(log_q[observed].sum()), abs=1e-4)
    with_alpha.eval()  # the evaluators see the model's bound only
    tr = poutine.trace(with_alpha.model).get_trace(x, y=y, observed=observed)
    assert "y_classify" not in tr.nodes


# -- training and classification -------------------------------------------------------------
def test_training_with_few_labels_learns_to_classify():
    """Two well-separated classes, 4 labels of 200: q(y|x) learns them (no label leak: the
    unlabelled rows' y holds the wrong class)."""
    torch.manual_seed(0)
    n = 100
    truth = torch.arange(n) % 2
    probs = torch.where(truth[:, None].bool(), torch.tensor([0.9] * 4 + [0.1] * 4), 0.1)
    probs = torch.where(truth[:, None].bool(), probs, torch.tensor([0.1] * 4 + [0.9] * 4))
    x = torch.bernoulli(probs)
    observed = torch.zeros(n, dtype=torch.bool)
    observed[:4] = True
    y = torch.where(observed, truth, 1 - truth)
    m = SSVAE(
        data_shape=(8,),
        num_classes=2,
        latent_dim=2,
        hidden=(16,),
        classifier_layers=(16,),
        classifier_hidden=16,
        alpha=10.0,
    )
    Trainer(m, elbo="enum", batch_size=100, epochs=40, lr=3e-2, progress=False).fit(
        {"x": x, "y": y, "observed": observed}
    )
    assert m.accuracy(x, truth) > 0.95


def test_trainer_refuses_a_sampling_objective():
    m = small()
    x, y, observed = batch(4)
    with pytest.raises(ConfigError, match="enum"):
        Trainer(m, elbo="trace", batch_size=4, max_steps=1, progress=False).fit(
            {"x": x, "y": y, "observed": observed}
        )


def test_bad_inputs_give_clear_errors():
    m = small()
    x, y, observed = batch()
    with pytest.raises(DataError, match="0..2"):
        m.model(x, y=torch.full((5,), 7), observed=observed)
    with pytest.raises(DataError, match="bool"):
        m.model(x, y=y, observed=observed.long())
    with pytest.raises(ShapeError, match=r"\[5\]"):
        m.model(x, y=y[:3], observed=observed)
    with pytest.raises(DataError, match="integer"):
        m.model(x, y=y.float(), observed=observed)
    # an unobserved row may hold anything, even -1: it never reaches a distribution
    m.model(x, y=torch.where(observed, y, -1), observed=observed)
    with pytest.raises(ConfigError, match="parallel"):
        small(enumerate="paralel")
    with pytest.raises(ConfigError, match="alpha"):
        small(alpha=-1.0)


def test_sample_and_registry():
    m = small()
    assert m.sample(4, y=torch.tensor([0, 1, 2, 0]), seed=0).shape == (4, 6)
    assert torch.equal(m.sample(3, seed=1), m.sample(3, seed=1))
    assert type(build_model("ssvae", m.config)) is SSVAE


def test_generate_draws_a_chosen_class_by_name_or_index():
    """generate(n, {"label": ...}) is p(x | y, z), z ~ p(z), with y the chosen class (a name
    or an index), as a CVAE's generate; wrong names and values list the valid ones."""
    m = small(class_names=["square", "ellipse", "heart"])
    chosen = m.sample(4, y=torch.full((4,), 2), seed=0, mean=True)
    for value in ("heart", "2", 2):
        assert torch.equal(m.generate(4, {"label": value}, seed=0, mean=True), chosen)
    other = m.generate(4, {"label": "square"}, seed=0, mean=True)
    assert not torch.allclose(other, chosen)  # the decoder is told the class
    assert torch.equal(m.generate(3, seed=1), m.sample(3, seed=1))  # no label: from p(y)
    with pytest.raises(DataError, match="valid: square, ellipse, heart .or their indices 0..2"):
        m.generate(2, {"label": "star"})
    for bad in (3, -1, "1.5", True):
        with pytest.raises(DataError, match="is not a class of 'label'"):
            m.generate(2, {"label": bad})
    with pytest.raises(ConfigError, match="unknown attribute 'lable'.*label .categorical"):
        m.generate(2, {"lable": "heart"})
    with pytest.raises(ConfigError, match=">= 1"):
        m.generate(0, {"label": "heart"})
    assert m.attribute_names == ("label",) and m.attributes[0]["values"][2] == "heart"
    assert small().class_names == ("0", "1", "2")
    assert build_model("ssvae", m.config).class_names == m.class_names
    for bad in (["a", "b"], ["a", "a", "b"], "abc", ["a", "", "c"]):
        with pytest.raises(ConfigError, match="class_names must be 3 distinct"):
            small(class_names=bad)


class TestSSVAEContract(ModelContract):
    settings = {"elbo": "enum"}

    def make_model(self):
        return small(alpha=1.0)

    def make_data(self):
        g = torch.Generator().manual_seed(0)
        n = self.num_data
        x = torch.bernoulli(torch.full((n, 6), 0.4), generator=g)
        y = torch.randint(K, (n,), generator=g)
        observed = torch.arange(n) % 4 == 0
        return {"x": x, "y": torch.where(observed, y, 0), "observed": observed}


# -- the command line --------------------------------------------------------------------------
def test_pyro_gen_train_ssvae_on_shapes(tmp_path):
    """`pyro-gen train --model ssvae` builds named batches from the data set (the first
    --num-labels training images labelled), trains with the enum objective by default."""
    from pyro_gen.cli import main
    from pyro_gen.models import load_model, read_config

    run = tmp_path / "run"
    args = (
        "--model ssvae --data shapes --num-train 128 --num-valid 32 --num-test 32 "
        "--image-size 16 --batch-size 32 --hidden 16 --classifier-hidden 16 "
        "--classifier-layers 16 --latent-dim 2 --num-labels 20 --epochs 1 --no-progress"
    ).split()
    assert main(["train", *args, "--out", str(run)]) == 0
    config = read_config(run)
    assert config["train"]["elbo"] == "enum" and config["model"]["args"]["num_classes"] == 3
    model = load_model(run)
    assert isinstance(model, SSVAE) and model.num_labels == 20
    assert model.class_names == ("square", "ellipse", "heart")  # the data set's label names
