"""What a reviewer of conditional and semi-supervised runs found misleading in the report: the
overview's density named log p(x) for a CVAE's log p(x, y), the split of each number, the ELBO
split called exact, a discrete label counted as a latent unit, a model without a latent."""

from __future__ import annotations

import json
import re

from pyro_gen.report import build_report

CVAE_EVAL = {
    "num_datapoints": 300,
    "num_samples": 100,
    "log_px": -11.773,
    "log_px_se": 0.256,
    "elbo": -11.903,
    "elbo_se": 0.259,
    "reconstruction": -8.888,
    "kl": 0.031,
    "gap": 0.130,
    "split": "test",
    "attributes_log_prob": -2.985,
    "attributes_per_site": {"shape": -1.099, "scale": -1.886},
    "bound_on": "log p(x, shape, scale)",
    "conditions": "shape, scale",
    "log_px_is": "log p(x, shape, scale)",
    "log_px_given_attributes": -8.789,
}


def _run(tmp_path, diagnostics: dict | None, summary: dict | None = None):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    if diagnostics is not None:
        (run / "eval" / "diagnostics.json").write_text(json.dumps(diagnostics))
    summary = summary or {"train": {"steps": 10, "epochs": 1}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def _overview(html: str) -> str:
    start = html.index('<section id="overview"')
    return html[start : html.index("</section>", start)]


def _cells(section: str) -> list[list[str]]:
    return [
        re.findall(r"<td>(.*?)</td>", row, re.S)
        for row in re.findall(r"<tr>(.*?)</tr>", section, re.S)
    ]


def test_a_conditional_run_s_overview_names_each_density_it_shows(tmp_path):
    overview = _overview(build_report(_run(tmp_path, CVAE_EVAL)))
    rows = {r[0]: r[1] for r in _cells(overview) if len(r) == 2}
    assert "log p(x)" not in rows  # -11.77 is log p(x, y), not log p(x)
    headline = [k for k in rows if k.startswith("log p(")]
    assert headline[0] == "log p(x | shape, scale)"  # the density of x given y first
    assert rows[headline[0]].startswith("-8.79 nats")
    assert rows["log p(x, shape, scale)"].startswith("-11.77 ± 0.26 nats")
    assert "gap log p(x, shape, scale) − ELBO 0.13" in rows["log p(x, shape, scale)"]
    evaluation = build_report(_run(tmp_path / "again", CVAE_EVAL)).split('id="evaluation"')[1]
    assert "gap log p(x) − ELBO" not in evaluation
    assert "gap log p(x, shape, scale) − ELBO" in evaluation


def test_an_unconditional_run_s_overview_says_log_p_x(tmp_path):
    plain = {k: CVAE_EVAL[k] for k in ("num_samples", "log_px", "log_px_se", "elbo", "gap")}
    rows = {r[0]: r[1] for r in _cells(_overview(build_report(_run(tmp_path, plain))))}
    assert rows["log p(x)"].startswith("-11.77 ± 0.26 nats (K = 100 importance samples")


def test_the_kl_table_marks_a_discrete_latent_and_leaves_it_out_of_active_units(tmp_path):
    ev = {
        "elbo": -20.0,
        "num_samples": 30,
        "log_px": -19.5,
        "active_units": 1,
        "latent_dims": 2,
        "kl_per_dim": [0.5, 0.001, 0.55],
        "kl_names": ["z[0]", "z[1]", "y_missing"],
        "mean_names": ["z[0]", "z[1]"],
        "au_variance": [0.3, 0.001],
        "au_threshold": 0.01,
        "discrete_sites": ["y_missing"],
    }
    html = build_report(_run(tmp_path, ev))
    rows = {r[0]: r for r in _cells(html) if r}
    assert rows["y_missing"] == ["y_missing", "0.5500", "–", "discrete latent (not a unit)"]
    assert rows["z[1]"][3] == "inactive" and rows["z[0]"][3] == "active"
    assert "1 of 2 continuous dimensions (discrete y_missing not counted)" in html


def test_an_importance_sampled_elbo_is_its_parts_only_to_monte_carlo_error(tmp_path):
    diag = {  # diagnose's: the ELBO of the K draws, the KL analytic (CVAE at K = 10)
        "elbo": -11.183,
        "reconstruction": -8.2,
        "kl": 3.002,
        "log_px": -11.0,
        "num_samples": 10,
    }
    html = build_report(_run(tmp_path, diag))
    assert "nats = reconstruction" not in html and "ELBO = reconstruction" not in html
    assert "nats ≈ reconstruction -8.20 − KL 3.00; the parts differ from it by 0.019" in html
    assert "ELBO ≈ reconstruction − KL (analytic KL; Monte-Carlo error)" in html
    exact = {"elbo": -11.2, "reconstruction": -8.2, "kl": 3.0, "num_particles": 1}
    run = _run(tmp_path / "exact", None, {"evaluate": exact})
    html = build_report(run)  # evaluate_elbo's split is exact: "="
    assert "nats = reconstruction -8.20 − KL 3.00" in html and "≈" not in html
