"""What a reviewer found misleading in evaluation outputs: compare's figure over runs that
measure different quantities, a discrete latent counted as a unit, a model with no latent."""

from __future__ import annotations

import math

from pyro_gen import plots


def _row(model, quantity, log_px, rank, d=0.0):
    return {
        "model": model,
        "quantity": quantity,
        "log_px": log_px,
        "nll_se": 0.2,
        "rank": rank,
        "d_log_px": d,
        "d_log_px_se": 0.1,
    }


def _markers(ax) -> list[tuple[str, float, float]]:
    """(marker, x, y) of each error bar's point."""
    out = []
    for c in ax.containers:
        line = c.lines[0]
        out.append((line.get_marker(), float(line.get_xdata()[0]), float(line.get_ydata()[0])))
    return out


def test_compare_s_figure_draws_each_quantity_against_its_own_best():
    rows = [
        _row("cvae", "log p(x | shape)", -8.79, 1),
        _row("cvae_small", "log p(x | shape)", -9.50, 2, d=0.71),
        _row("vae1", "log p(x)", -17.3, 1),
        _row("vae2", "log p(x)", -18.0, 2, d=0.7),
    ]
    fig = plots.comparison_plot(rows)
    assert len(fig.axes) == 2  # one panel per quantity
    top, bottom = fig.axes
    assert top.get_xlabel().startswith("log p̂(x | shape)")
    assert bottom.get_xlabel().startswith("log p̂(x) ")
    assert "different quantities" in fig.get_suptitle()
    # vae2's triangle sits at vae1's -17.3 − 0.7, not at the CVAE's −8.79 − 0.7
    triangles = [m for m in _markers(bottom) if m[0] == "^"]
    assert len(triangles) == 1 and math.isclose(triangles[0][1], -18.0)
    # no zero-length triangle for either best
    assert [m[0] for m in _markers(top)] == ["o", "o", "^"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == len(set(labels)) == 2


def test_compare_s_figure_of_one_quantity_is_one_panel_without_a_caveat():
    fig = plots.comparison_plot([_row("a", "log p(x)", -90.0, 1), _row("b", None, -91, 2, d=1)])
    assert len(fig.axes) == 1
    assert "different" not in fig.get_suptitle()
    assert [m[0] for m in _markers(fig.axes[0])] == ["o", "o", "^"]


def test_a_discrete_label_is_no_active_unit_but_keeps_its_kl(tmp_path):
    import torch

    from pyro_gen.evaluate import diagnose
    from pyro_gen.models import SSVAE

    torch.manual_seed(0)
    m = SSVAE(data_shape=(1, 4, 4), num_classes=3, latent_dim=2, hidden=(8,))
    x = torch.rand(12, 1, 4, 4).bernoulli()
    d = diagnose(m, x, num_samples=25)
    s = d.summary()
    assert s["discrete_sites"] == ["y_missing"]
    assert s["mean_names"] == ["z[0]", "z[1]"] and s["latent_dims"] == 2  # z's units only
    assert all(math.isfinite(v) for v in s["au_variance"])  # no NaN "covariance" of a label
    assert "y_missing" in s["kl_names"]  # its KL(q(y|x) ‖ p(y)) is still reported
    kl_y = s["kl_per_dim"][s["kl_names"].index("y_missing")]
    assert kl_y > 0
    assert s["per_site"]["y_missing"]["discrete"] and s["per_site"]["y_missing"]["dims"] == 0
    fig = plots.kl_per_dimension(d)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "y_missing (discrete)" in ticks
    assert "discrete y_missing" in fig.get_suptitle()


def test_a_model_without_a_latent_has_no_k_hat_ess_or_units_to_show():
    import torch

    from pyro_gen.evaluate import compare, diagnose
    from pyro_gen.models import VAE
    from pyro_gen.models.autoregressive import MADEModel

    torch.manual_seed(0)
    made = MADEModel(data_shape=(1, 4, 4), hidden=(8,))
    x = torch.rand(10, 1, 4, 4).bernoulli()
    s = diagnose(made, x, num_samples=25).summary()
    assert s["has_latent"] is False and "log p(x) is exact" in s["exact_note"]
    assert s["gap"] == 0.0 and s["latent_dims"] == 0
    vae = VAE(data_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    assert "has_latent" not in diagnose(vae, x, num_samples=25).summary()
    c = compare({"made": made, "vae": vae}, x, num_samples=25)
    row = next(r for r in c.rows if r["model"] == "made")
    assert row["khat_share"] is None and row["active_units"] is None
    line = next(li for li in c.to_markdown().splitlines() if li.startswith("| ") and "made" in li)
    assert line.count("n/a") == 2 and "0.000 | n/a" not in line.replace("| 0.000 | n/a", "")
    assert "n/a for made: no latent variable" in c.to_markdown()
