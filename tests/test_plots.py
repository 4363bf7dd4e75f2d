"""Figures that used to mislead: what their titles, labels and marks say."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch

from pyro_gen import plots


def _texts(fig) -> str:
    out = [t.get_text() for t in fig.findobj(match=lambda a: hasattr(a, "get_text"))]
    return " | ".join(out)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_reconstructions_title_says_the_rows_alternate():
    x = torch.rand(20, 1, 4, 4)
    fig = plots.reconstruction_figure(x, x)  # 20 images on 10 columns: 4 rows
    title = fig.axes[0].get_title()
    assert "top" not in title and "bottom" not in title
    assert "alternate" in title
    one_row = plots.reconstruction_figure(x[:6], x[:6]).axes[0].get_title()
    assert "top row" in one_row and "bottom row" in one_row


def test_beta_zero_curves_say_reconstruction_not_elbo():
    rows = [
        {"step": 10, "loss": 50.0, "valid_elbo": "", "valid_reconstruction": ""},
        {"step": 20, "loss": 40.0, "valid_elbo": "", "valid_reconstruction": -41.0},
        {"step": 40, "loss": 30.0, "valid_elbo": "", "valid_reconstruction": -31.0},
    ]
    fig = plots.training_curves(rows)
    right = fig.axes[1]
    assert "reconstruction" in right.get_title() and "not an ELBO" in right.get_title()
    assert "ELBO" not in right.get_ylabel().replace("not an ELBO", "")
    assert list(right.lines[0].get_ydata()) == [-41.0, -31.0]
    assert "−reconstruction" in fig.axes[0].get_ylabel()
    vae = plots.training_curves(
        [{**r, "valid_elbo": -1.0, "valid_reconstruction": ""} for r in rows]
    )
    assert vae.axes[1].get_title() == "validation ELBO"


def _diag(kl_names, kl, mean_names, active):
    return SimpleNamespace(
        kl_per_dim=torch.tensor([kl], dtype=torch.float64),
        kl_names=kl_names,
        mean_names=mean_names,
        active=torch.tensor(active),
        active_units=int(sum(active)),
    )


def test_kl_per_dimension_title_fits_and_near_zero_bars_show():
    names = [f"z[{i}]" for i in range(10)]
    kl = [2.6, 2.2, 2.6, 0.0, 0.004, 2.1, 0.27, 0.0, 0.003, 0.001]
    active = [v > 0.1 for v in kl]
    fig = plots.kl_per_dimension(_diag(names, kl, names, active))
    fig.canvas.draw()
    box = fig.bbox
    for text in (fig.axes[0].title, fig._suptitle):
        extent = text.get_window_extent()
        assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, text.get_text()
    assert "active units 5/10" in fig._suptitle.get_text()
    ax = fig.axes[0]
    marks = ax.lines[0]  # a marker at every bar's height, zero included
    assert len(marks.get_xdata()) == 10 and marker_visible(marks)
    values = [t.get_text() for t in ax.texts]
    assert values[3] == "0" and values[4] == "0.004"
    grey = [b.get_facecolor()[:3] for b in ax.patches]
    assert grey[3] != grey[0]  # inactive in another colour


def marker_visible(line) -> bool:
    return line.get_marker() not in (None, "", "None", " ") and line.get_markersize() > 0


def test_a_latent_without_a_kl_per_dimension_is_named_a_whole_site():
    means = ["z[0]", "z[1]", "z[2]"]
    fig = plots.kl_per_dimension(_diag(["z"], [3.5], means, [True, False, True]))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["z (whole site)"]
    assert "one bar per site" in fig._suptitle.get_text()


def test_compare_curves_labels_each_run():
    h1 = [{"step": 5, "valid_elbo": -10.0}, {"step": 10, "valid_elbo": -9.0}]
    h2 = [{"step": 5, "valid_elbo": "", "valid_reconstruction": -7.0}]
    ax = plots.compare_curves({"a": h1, "b": h2}).axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert labels == [
        "a (validation ELBO)",
        "b (validation reconstruction E log p(x|z) (not an ELBO))",
    ]
    assert ax.get_title() == (
        "validation ELBO and validation reconstruction E log p(x|z) (not an ELBO) per step"
    )


def test_curves_without_validation_show_the_step_s_other_metrics():
    rows = [
        {"step": 2, "loss": 1.0, "valid_elbo": "", "critic_loss": 1.2, "divergence": 0.1},
        {"step": 4, "loss": 0.9, "valid_elbo": "", "critic_loss": 1.1, "divergence": 0.2},
    ]
    fig = plots.training_curves(rows, loss_label="generator loss")
    assert fig.axes[0].get_ylabel() == "generator loss"
    right = fig.axes[1]
    assert "ELBO" not in right.get_title() + right.get_ylabel()
    assert [line.get_label() for line in right.lines] == ["critic loss", "divergence"]
    one = plots.training_curves([{"step": 1, "loss": 2.0, "valid_elbo": ""}])
    assert len(one.axes) == 1  # no empty 'validation ELBO' panel
