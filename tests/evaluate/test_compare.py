"""Model comparison: ordering, paired differences and their standard error, tables."""

from __future__ import annotations

import csv
import io
import math

import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate import compare, diagnose, evaluate_elbo
from pyro_gen.models import VAE
from tests.evaluate.conftest import make_linear_gaussian, sample_x


@pytest.fixture
def two_models():
    good = make_linear_gaussian(guide="exact")
    bad = make_linear_gaussian(guide="exact")
    bad.W = bad.W * 1.3
    x = sample_x(good, 200)
    return good, bad, x


def test_ordering_and_paired_difference_are_exact_with_exact_guides(two_models):
    good, bad, x = two_models
    diff = good.exact_log_px(x) - bad.exact_log_px(x)
    assert diff.mean() > 0
    for order in (["bad", "good"], ["good", "bad"]):
        models = {"good": good, "bad": bad}
        c = compare({k: models[k] for k in order}, x, num_samples=1)
        assert c.names == ["good", "bad"]
        best, other = c.rows
        assert best["rank"] == 1 and best["d_log_px"] == 0.0 and best["d_log_px_se"] == 0.0
        assert other["d_log_px"] == pytest.approx(float(diff.mean()), abs=1e-8)
        assert other["d_log_px_se"] == pytest.approx(float(diff.std() / 200**0.5), abs=1e-8)
        assert best["test_nll"] == pytest.approx(-float(good.exact_log_px(x).mean()), abs=1e-8)
        # pairing: the difference is far better determined than either NLL
        assert other["d_log_px_se"] < best["nll_se"]


def test_tables_are_written_as_markdown_and_csv(two_models, tmp_path):
    good, bad, x = two_models
    c = compare([bad, good], x[:50], num_samples=30)
    assert c.names == ["LinearGaussian-1", "LinearGaussian-0"]
    md, path_csv = c.write(tmp_path)
    text = md.read_text()
    head = "| rank | model | log p̂ of | estimate | test NLL |"
    assert text.startswith(head) and "LinearGaussian-1" in text
    assert "| importance-sampled |" in text  # what each number is
    rows = list(csv.DictReader(io.StringIO(path_csv.read_text())))
    assert [r["model"] for r in rows] == c.names
    assert float(rows[1]["d_log_px"]) == pytest.approx(c.rows[1]["d_log_px"])
    assert set(rows[0]) >= {"test_nll", "elbo", "gap", "active_units", "khat_share"}


def test_precomputed_diagnostics_must_cover_x(two_models):
    good, bad, x = two_models
    d = diagnose(good, x[:10], num_samples=1)
    with pytest.raises(ConfigError, match="10 datapoints, not the 20"):
        compare({"good": d, "bad": bad}, x[:20], num_samples=1)
    c = compare({"good": d, "bad": bad}, x[:10], num_samples=1)
    torch.testing.assert_close(c.diagnostics["good"].log_px, d.log_px)


def test_a_point_mass_guide_gets_a_flagged_row_not_a_crash(tmp_path):
    x = torch.bernoulli(torch.full((30, 6), 0.4), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    vae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,))
    ae = VAE(data_shape=(6,), latent_dim=2, hidden=(8,), beta=0.0)
    c = compare({"ae": ae, "vae": vae}, x, num_samples=5)
    assert c.names == ["vae", "ae"] and list(c.diagnostics) == ["vae"]
    ranked, flagged = c.rows
    assert ranked["rank"] == 1 and ranked["is_bound"] and ranked["d_log_px"] == 0.0
    assert flagged["rank"] is None and flagged["is_bound"] is False
    assert flagged["note"].startswith("not a bound: point-mass guide")
    recon = evaluate_elbo(ae, x, num_particles=1).reconstruction.mean()
    assert flagged["reconstruction"] == pytest.approx(float(recon))
    assert c.not_bounds["ae"].is_bound is False
    for key in ("test_nll", "elbo", "kl", "gap", "d_log_px"):
        assert math.isnan(flagged[key]), key
    assert c.ranked_rows == [ranked]
    md = c.to_markdown()
    assert "| – | ae † |" in md and "† not a bound: point-mass guide" in md
    rows = list(csv.DictReader(io.StringIO(c.to_csv())))
    assert [(r["model"], r["rank"], r["is_bound"]) for r in rows] == [
        ("vae", "1", "True"),
        ("ae", "", "False"),
    ]
    only_ae = compare({"ae": ae}, x, num_samples=5)  # nothing to rank: still a table
    assert only_ae.ranked_rows == [] and "† not a bound" in only_ae.to_markdown()


def test_a_conditional_model_is_ranked_on_log_p_x_given_y_apart_from_log_p_x():
    """A CVAE's importance-sampled log p(x, y) becomes log p(x | y) = log p(x, y) − log p(y)
    (here log p(shape) = −log 3 exactly on every row): a quantity of its own, ranked apart from
    the VAEs' log p(x), with a warning; ranks start at 1 within each quantity."""
    from pyro_gen.models import CVAE

    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((12, 1, 4, 4), 0.4), generator=torch.Generator().manual_seed(0))
    shape = torch.arange(12) % 3
    cvae = CVAE(
        data_shape=(1, 4, 4),
        latent_dim=2,
        hidden=(8,),
        attributes=[{"name": "shape", "kind": "categorical", "values": ["a", "b", "c"]}],
    )
    vaes = {f"vae{i}": VAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,)) for i in (1, 2)}
    c = compare({**vaes, "cvae": cvae}, x, num_samples=8, observed={"cvae": {"shape": shape}})
    rows = {r["model"]: r for r in c.rows}
    assert rows["cvae"]["quantity"] == "log p(x | shape)"
    assert {rows[k]["quantity"] for k in vaes} == {"log p(x)"}
    joint = diagnose(cvae, x, num_samples=8, shape=shape)  # the same seed: the same draws
    assert rows["cvae"]["test_nll"] == pytest.approx(joint.summary()["nll"] - math.log(3))
    assert rows["cvae"]["elbo"] == pytest.approx(joint.summary()["elbo"] + math.log(3))
    assert rows["cvae"]["rank"] == 1 and rows["cvae"]["d_log_px"] == 0.0
    assert sorted(rows[k]["rank"] for k in vaes) == [1, 2]
    assert "different things" in c.warning and "cvae" in c.warning
    md = c.to_markdown()
    assert "log p(x \\| shape)" in md and "WARNING" in md and "Ranks start at 1" in md
    same = compare(vaes, x, num_samples=8)
    assert same.warning == "" and [r["rank"] for r in same.rows] == [1, 2]


def test_khat_share_below_psis_min_samples_says_why_it_is_missing(two_models):
    good, bad, x = two_models
    few = compare([good, bad], x[:20], num_samples=10).to_markdown()
    assert "n/a (K < 21)" in few and "| nan |" not in few
    enough = compare([good, bad], x[:20], num_samples=30).to_markdown()
    assert "n/a (K < 21)" not in enough
