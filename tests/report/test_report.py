"""The run report: self-contained, the headline numbers and cautions in words, the section
registry, escaping, the page over several runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pyro_gen.errors import ConfigError
from pyro_gen.report import (
    Image,
    Section,
    Table,
    build_comparison_report,
    build_report,
    load_run,
    register_section,
    unregister_section,
    write_report,
)
from tests.report.conftest import embedded_images, png_size


def test_the_report_stands_alone(evaluated_run):
    html = write_report(evaluated_run).read_text()
    assert "<script" not in html.lower()  # no JavaScript at all
    assert "http://" not in html and "https://" not in html  # nothing fetched
    assert 'href="' not in html.replace('href="#', "")  # only links within the page
    images = embedded_images(html)
    # training curves (redrawn), samples, reconstructions, KL per dim, k̂, log p vs ELBO
    assert len(images) == 6
    for data in images:
        w, h = png_size(data)
        assert w > 100 and h > 100


def test_headline_numbers_are_the_run_folder_s(evaluated_run):
    html = build_report(evaluated_run)
    diag = json.loads((evaluated_run / "eval" / "diagnostics.json").read_text())
    for key in ("elbo", "reconstruction", "kl", "log_px", "gap"):
        assert f"{diag[key]:.2f}" in html, key
    assert f"ELBO {diag['elbo']:.2f} ± {diag['elbo_se']:.2f} nats ≈ reconstruction " in html
    assert f"{diag['active_units']} of {diag['latent_dims']}" in html
    share = diag["khat_share_unreliable"]
    assert f"{100 * share:.1f}% of datapoints with k̂ &gt; 0.7" in html
    # every sections' titles, in the registry's order
    titles = ["Overview", "Configuration", "Training", "Samples and reconstructions", "Evaluation"]
    positions = [html.index(f"<h2>{t}</h2>") for t in titles]
    assert positions == sorted(positions)
    # one row per KL column, with the active/inactive verdict of the units
    assert html.count("<td>z[") == diag["latent_dims"]  # the KL per dimension table
    assert "Other figures" not in html  # every figure of the folder has its section


def _fake_run(tmp_path: Path, share: float, beta: float = 1.0) -> Path:
    run = tmp_path / f"run-{share}-{beta}"
    (run / "eval").mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps({"model": {"name": "vae", "args": {"latent_dim": 2, "beta": beta}}})
    )
    diag = {
        "num_datapoints": 1000, "num_samples": 500, "log_px": -90.5, "log_px_se": 0.3,
        "elbo": -95.25, "elbo_se": 0.3, "reconstruction": -80.0, "kl": 15.25, "gap": 4.75,
        "ess_mean": 3.0, "ess_min": 1.0, "khat_median": 0.9, "khat_max": 2.0,
        "khat_threshold": 0.7, "khat_share_unreliable": share,
        "khat_num_unreliable": int(1000 * share), "active_units": 1, "latent_dims": 2,
        "au_threshold": 0.01, "kl_per_dim": [15.0, 0.25], "kl_names": ["z[0]", "z[1]"],
        "au_variance": [1.5, 0.001], "mean_names": ["z[0]", "z[1]"], "split": "test",
    }  # fmt: skip
    (run / "eval" / "diagnostics.json").write_text(json.dumps(diag))
    return run


def test_a_high_share_of_unreliable_khat_is_said_in_words(tmp_path):
    html = build_report(_fake_run(tmp_path, share=0.976))
    assert "Caution:" in html
    assert "k̂ &gt; 0.7 for 97.6% of the 1000 datapoints" in html
    assert "unreliable" in html and "more importance samples (K = 500 now)" in html
    assert "a better guide" in html
    quiet = build_report(_fake_run(tmp_path, share=0.05))
    assert "Caution:" not in quiet
    assert "5.0% of datapoints with k̂ &gt; 0.7" in quiet


def test_kl_per_dimension_table_says_which_units_are_active(tmp_path):
    html = build_report(_fake_run(tmp_path, share=0.0))
    assert "<td>z[0]</td><td>15.0000</td><td>1.5</td><td>active</td>" in html
    assert "<td>z[1]</td><td>0.2500</td><td>0.001</td><td>inactive</td>" in html


def test_a_beta_zero_run_is_not_called_a_bound(tmp_path):
    run = _fake_run(tmp_path, share=0.0, beta=0)
    (run / "history.csv").write_text(
        "step,epoch,loss,valid_elbo,beta,lr,elapsed,valid_reconstruction\n"
        "10,1,50.0,,0.0,0.001,1.0,-49.0\n"
    )
    html = build_report(run)
    assert "there is no ELBO" in html and "not a bound" in html
    assert embedded_images(html)  # the curves are drawn from the history


def test_values_are_escaped(tmp_path):
    run = _fake_run(tmp_path, share=0.0)
    config = json.loads((run / "config.json").read_text())
    config["model"]["args"]["tag"] = "<script>alert(1)</script>"
    (run / "config.json").write_text(json.dumps(config))
    html = build_report(run)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_an_empty_folder_gives_a_page_that_says_so(tmp_path):
    html = build_report(tmp_path)
    assert "Nothing to show" in html
    with pytest.raises(ConfigError, match="does not exist"):
        build_report(tmp_path / "missing")


def test_a_family_adds_its_section_through_the_registry(tmp_path):
    run = _fake_run(tmp_path, share=0.0)
    calls = []

    @register_section("test_family", order=45)
    def family(record):
        calls.append(record.model_name)
        if record.model_name != "vae":
            return None
        return Section("Family numbers", paragraphs=["π = 0.5"], tables=[Table(["k"], [[1]])])

    try:
        html = build_report(run)
    finally:
        unregister_section("test_family")
    assert calls == ["vae"]
    assert "<h2>Family numbers</h2>" in html and "π = 0.5" in html
    # placed by its order: after the samples (40, absent here) and before evaluation (50)
    where = [html.index(f"<h2>{t}</h2>") for t in ("Configuration", "Family numbers")]
    assert where[0] < where[1] < html.index("<h2>Evaluation</h2>")
    assert "Family numbers" not in build_report(run)  # unregistered


def test_sections_refuse_what_would_break_the_page():
    with pytest.raises(ConfigError, match="data: URIs"):
        Image("figures/samples.png")
    with pytest.raises(ConfigError, match="cells"):
        Table(["a", "b"], [[1]])
    with pytest.raises(ConfigError, match="kind"):
        register_section("x", kind="other")


def test_figures_no_section_shows_land_in_other_figures(evaluated_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(evaluated_run, run)
    shutil.copy(run / "figures" / "samples.png", run / "figures" / "traversals.png")
    html = build_report(run)
    assert "<h2>Other figures</h2>" in html and "traversals" in html
    assert len(embedded_images(html)) == 7


def test_the_page_over_several_runs(evaluated_run, tmp_path):
    other = _fake_run(tmp_path, share=0.5)
    html = build_comparison_report([evaluated_run, other])
    assert "<h2>Runs</h2>" in html and "<h2>Training curves</h2>" in html
    assert evaluated_run.name in html and other.name in html
    assert f"{other.name}: Pareto k̂ &gt; 0.7 for 50.0%" in html
    assert "-90.50" in html  # the second run's log p(x)
    for data in embedded_images(html):
        png_size(data)
    assert load_run(other).khat_share() == 0.5


def test_an_ais_evaluation_has_its_section(tmp_path):
    run = _fake_run(tmp_path, share=0.0)
    ais = {
        "method": "ais", "log_px": -89.25, "log_px_se": 0.31, "mc_error_mean": 0.05,
        "ess_mean": 12.5, "ess_min": 3.0, "acceptance_mean": 0.71, "num_datapoints": 100,
        "num_steps": 500, "num_chains": 16, "num_leapfrog": 10, "start": "guide",
        "schedule": "sigmoid", "seconds": 12.0,
        "bdmc": {"gap": 1.75, "gap_se": 0.2, "num_datapoints": 20},
    }  # fmt: skip
    (run / "summary.json").write_text(json.dumps({"evaluate_ais": ais}))
    html = build_report(run)
    assert "<h2>Annealed importance sampling</h2>" in html
    assert "<td>log p(x) by AIS</td><td>-89.250</td><td>0.310</td>" in html
    assert "AIS minus importance sampling: +1.25 nats" in html  # −89.25 − (−90.5)
    assert "The BDMC gap is 1.75 nats" in html
    assert "Annealed importance sampling" not in build_report(_fake_run(tmp_path / "b", 0.0))
