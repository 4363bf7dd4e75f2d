"""What a log p̂(x) is (review 12, items 5, 6, 7, 9): a point-mass guide over a discrete latent
(the VQ-VAE's nearest codes) gives a *bound*, not an importance-sampled estimate, with the gap
unknown and k̂/ESS n/a, in ``diagnose``, ``compare``, ``pyro-gen evaluate``/``compare`` and the
report; a VQ-VAE's codebook usage is reported; a hierarchical model's KL and active units per
site are printed and in the report; the training curve's caption says what the loss is."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pyro_gen.cli import main
from pyro_gen.evaluate import compare, diagnose
from pyro_gen.evaluate.compare import plot_rows
from pyro_gen.evaluate.diagnostics import ESTIMATE_BOUND, ESTIMATE_EXACT, ESTIMATE_IS
from pyro_gen.models import VAE, build_model
from pyro_gen.report import build_report
from pyro_gen.report.builtin import loss_caption
from pyro_gen.report.run import load_run

SMALL_VQ = dict(data_shape=(1, 8, 8), num_codes=8, code_dim=4, channels=(8, 8), prior_hidden=(16,))
TINY = [
    "--num-train", "256", "--num-valid", "64", "--num-test", "64", "--image-size", "16",
    "--epochs", "1", "--batch-size", "64", "--no-progress",
]  # fmt: skip


def binary(n: int, shape=(1, 8, 8), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, *shape), 0.3), generator=g)


def test_diagnose_names_what_log_px_is():
    x = binary(12)
    vq = build_model("vqvae", SMALL_VQ).eval()
    d = diagnose(vq, x, num_samples=25, progress=False)
    s = d.summary()
    assert d.estimate == s["estimate"] == ESTIMATE_BOUND and s["point_mass_sites"] == ["z"]
    # K identical draws: log p̂ is the ELBO, but the gap is unknown, not 0; no ESS, no k̂
    torch.testing.assert_close(d.log_px, d.elbo)
    for key in ("gap", "gap_se", "ess_mean", "ess_min", "khat_share_unreliable", "khat_max"):
        assert math.isnan(s[key]), key
    assert "gap unknown" in s["estimate_note"]
    vae = VAE(data_shape=(1, 8, 8), latent_dim=2, hidden=(8,))
    s = diagnose(vae, x, num_samples=25, progress=False).summary()
    assert s["estimate"] == ESTIMATE_IS and s["gap"] >= 0 and s["ess_mean"] > 0
    assert "estimate_note" not in s
    made = build_model("made", {"data_shape": [1, 8, 8], "hidden": [16]}).eval()
    assert diagnose(made, x, num_samples=3, progress=False).estimate == ESTIMATE_EXACT


def test_a_confident_but_not_degenerate_discrete_guide_is_no_point_mass():
    """Zero entropy is what makes a point mass: a Categorical with finite logits is sampled."""
    import pyro
    import pyro.distributions as dist
    from torch import nn

    class Mixture(nn.Module):
        def __init__(self, logits: list[float]) -> None:
            super().__init__()
            self.logits = nn.Parameter(torch.tensor(logits))

        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                c = pyro.sample("c", dist.Categorical(logits=torch.zeros(3)))
                pyro.sample("x", dist.Normal(c.float().unsqueeze(-1), 1.0).to_event(1), obs=x)

        def guide(self, x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("c", dist.Categorical(logits=self.logits))

    x = torch.zeros(5, 1)
    d = diagnose(Mixture([3.0, 0.0, 0.0]), x, num_samples=30, progress=False)
    assert d.estimate == ESTIMATE_IS and d.point_mass_sites == []
    assert not math.isnan(d.summary()["ess_mean"])
    inf = float("-inf")  # the same guide with all its mass on c = 0: a bound
    d = diagnose(Mixture([0.0, inf, inf]), x, num_samples=30, progress=False)
    assert d.estimate == ESTIMATE_BOUND and d.point_mass_sites == ["c"]


def test_compare_ranks_a_bound_apart_and_marks_it():
    x = binary(10)
    vq = build_model("vqvae", SMALL_VQ).eval()
    vae = VAE(data_shape=(1, 8, 8), latent_dim=2, hidden=(8,))
    c = compare({"vq": vq, "vae": vae}, x, num_samples=25, progress=False)
    rows = {r["model"]: r for r in c.rows}
    assert rows["vae"]["estimate"] == ESTIMATE_IS and rows["vq"]["estimate"] == ESTIMATE_BOUND
    # apart: after the estimate whatever the numbers, ranked among bounds (its own best)
    assert c.names == ["vae", "vq"] and rows["vq"]["rank"] == 1 and rows["vq"]["d_log_px"] == 0
    assert rows["vq"]["gap"] is None and rows["vq"]["khat_share"] is None
    assert rows["vq"]["active_units"] is None  # all its latents are discrete
    md = c.to_markdown()
    vq_line = next(line for line in md.splitlines() if line.startswith("| 1 | vq"))
    assert "vq ‡" in vq_line and ESTIMATE_BOUND in vq_line and "| n/a |" in vq_line
    assert "‡ bound (point-mass guide)" in md and "ranked apart" in md
    assert "estimate" in c.to_csv().splitlines()[0]
    panels = {r["quantity"] for r in plot_rows(c.rows)}
    assert panels == {"log p(x)", f"log p(x): {ESTIMATE_BOUND}"}


def test_loss_caption_follows_the_objective_and_the_model(tmp_path):
    from pyro_gen.report.run import RunRecord

    def run(model: str, elbo: str, k: int = 1) -> RunRecord:
        return RunRecord(
            tmp_path,
            config={"model": {"name": model}, "train": {"elbo": elbo, "num_particles": k}},
        )

    assert loss_caption(run("vae", "trace")).startswith("β-weighted −ELBO")
    iwae = loss_caption(run("vae", "iwae", 5))
    assert iwae.startswith("−L_k") and "k = 5" in iwae
    assert "DReG" in loss_caption(run("hvae", "iwae_dreg", 3))
    vq = loss_caption(run("vqvae", "trace"))
    assert "codebook + commitment" in vq and "not an ELBO" in vq
    assert loss_caption(run("not_registered_here", "trace")).startswith("β-weighted")


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("vq") / "vq"
    args = ["--model", "vqvae", "--num-codes", "8", "--code-dim", "4", "--channels", "8,8"]
    assert main(["train", *TINY, *args, "--prior-hidden", "16", "--out", str(run)]) == 0
    return run


def test_evaluate_calls_a_point_mass_bound_a_bound(vq_run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(vq_run), "--num-samples", "25", "--limit", "32"]) == 0
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if "log p(x)" in s)
    assert "bound (point-mass guide), gap unknown" in line and "k̂ and ESS n/a" in line
    assert "gap 0.000" not in out and "active units n/a (discrete z)" in line
    assert "codebook: perplexity" in out and "dead" in out
    assert "no prior-only stage" in out and "model.prior_only()" in out  # said, and how
    diag = json.loads((vq_run / "eval" / "diagnostics.json").read_text())
    assert diag["estimate"] == ESTIMATE_BOUND
    assert (
        diag["gap"] is None and diag["ess_mean"] is None and diag["khat_share_unreliable"] is None
    )
    usage = diag["codebook"]
    assert 1 <= usage["perplexity"] <= 8 and usage["codes_used"] + usage["dead_codes"] == 8
    summary = json.loads((vq_run / "summary.json").read_text())["evaluate"]
    assert summary["codebook"] == usage and summary["estimate"] == ESTIMATE_BOUND
    assert "no prior-only stage" in diag["prior_stage_note"]
    assert not (vq_run / "figures" / "khat.png").exists()  # no k̂ to draw
    html = build_report(load_run(vq_run))
    assert "bound (point-mass guide)" in html and "− ELBO unknown" in html
    assert "perplexity" in html and "codebook + commitment losses" in html
    assert "no prior-only stage" in html
    assert "β-weighted −ELBO" not in html


def test_evaluate_without_samples_reports_codebook_usage(vq_run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(vq_run), "--limit", "32"]) == 0
    assert "codebook: perplexity" in capsys.readouterr().out
    summary = json.loads((vq_run / "summary.json").read_text())["evaluate"]
    assert summary["codebook"]["num_datapoints"] == 32


def test_compare_cli_marks_the_vq_bound(vq_run, tmp_path, capsys):
    other = tmp_path / "vae"
    assert main(["train", *TINY, "--hidden", "16", "--latent-dim", "2", "--out", str(other)]) == 0
    capsys.readouterr()
    out_dir = tmp_path / "cmp"
    args = ["--num-samples", "25", "--limit", "16", "--no-progress", "--out", str(out_dir)]
    assert main(["compare", str(other), str(vq_run), *args]) == 0
    out = capsys.readouterr().out
    assert "vq ‡" in out and "ranked apart, as lower bounds" in out
    assert "share k̂ > 0.7 0.000" not in out
    html = (out_dir / "comparison.html").read_text()
    assert ESTIMATE_BOUND in html and "ranked apart" in html


def test_evaluate_prints_kl_and_units_per_site_of_a_hierarchical_model(tmp_path, capsys):
    run = tmp_path / "hvae"
    args = ["--model", "hvae", "--latent-dims", "3,2", "--hidden", "16", "--hidden-top", "8"]
    assert main(["train", *TINY, *args, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--num-samples", "10", "--limit", "32"]) == 0
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if "KL per site:" in s)
    diag = json.loads((run / "eval" / "diagnostics.json").read_text())
    sites = diag["per_site"]
    assert list(sites) == ["z2", "z1"]  # the guide's (top-down) order
    for name, e in sites.items():
        assert f"{name} {e['kl']:.2f} nats (AU {e['active_units']}/{e['dims']})" in line
    assert [e["dims"] for e in sites.values()] == [2, 3]
    html = build_report(load_run(run))
    assert "KL and active units per latent site" in html and "KL per site" in html


def testprior_stage_note_only_where_a_prior_only_stage_has_something_to_train(tmp_path):
    from pyro_gen.cli.evaluate import prior_stage_note

    (tmp_path / "summary.json").write_text(json.dumps({"train": {"steps": 1}}))
    made_prior = build_model("vqvae", SMALL_VQ)
    assert "no prior-only stage" in prior_stage_note(made_prior, tmp_path)
    assert all(p.requires_grad for p in made_prior.parameters())  # the stage restored them
    assert (
        prior_stage_note(build_model("vqvae", {**SMALL_VQ, "prior": "uniform"}), tmp_path) is None
    )
    assert prior_stage_note(VAE(data_shape=(1, 8, 8), latent_dim=2, hidden=(8,)), tmp_path) is None
    (tmp_path / "summary.json").write_text(json.dumps({}))  # not trained by pyro-gen train
    assert prior_stage_note(made_prior, tmp_path) is None
