"""The evaluation figures of pyro_gen.plots draw and save."""

from __future__ import annotations

import torch

from pyro_gen import plots
from pyro_gen.evaluate import compare, diagnose
from tests.evaluate.conftest import make_linear_gaussian


def test_evaluation_figures_save(lg, tmp_path):
    make, x = lg
    m = make(guide="meanfield", widen=1.5)
    d = diagnose(m, x, num_samples=40)
    figs = {
        "kl": plots.kl_per_dimension(d),
        "khat": plots.khat_histogram(d.khat),
        "scatter": plots.log_px_vs_elbo(d.log_px, d.elbo),
        "compare": plots.comparison_plot(
            compare({"a": d, "b": make_linear_gaussian(guide="prior")}, x, num_samples=40)
        ),
    }
    for name, fig in figs.items():
        assert fig.axes, name
        path = plots.save_figure(fig, tmp_path / f"{name}.png")
        assert path.read_bytes()[:4] == b"\x89PNG"
    k = torch.tensor([0.1, 0.9, float("inf"), float("nan")])
    plots.save_figure(plots.khat_histogram(k), tmp_path / "k.png")
