"""`pyro-gen evaluate --num-samples` and `pyro-gen compare` end to end on tiny trained runs."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from pyro_gen.cli import main
from pyro_gen.evaluate import load_inference_data

TINY = [
    "--num-train", "256", "--num-valid", "64", "--num-test", "64", "--image-size", "16",
    "--epochs", "1", "--batch-size", "32", "--hidden", "32", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = []
    for name, latent in (("small", "2"), ("wide", "3")):
        run = root / name
        assert main(["train", *TINY, "--latent-dim", latent, "--out", str(run)]) == 0
        out.append(run)
    return out


def test_evaluate_with_num_samples_writes_the_diagnostics(runs, capsys):
    run = runs[0]
    assert (
        main(["evaluate", str(run), "--num-samples", "25", "--limit", "16", "--points", "3"]) == 0
    )
    assert "log p(x)" in capsys.readouterr().out
    diag = json.loads((run / "eval" / "diagnostics.json").read_text())
    assert diag["num_datapoints"] == 16 and diag["num_samples"] == 25
    assert diag["gap"] >= 0 and diag["log_px"] >= diag["elbo"]
    assert len(diag["kl_per_dim"]) == 2 and 0 <= diag["active_units"] <= 2
    idata = load_inference_data(run / "eval" / "inference_data.nc")
    assert dict(idata.posterior["z"].sizes)["point"] == 3
    assert idata.log_likelihood["x"].shape == (1, 1, 16)
    for name in ("kl_per_dimension", "khat", "log_px_vs_elbo"):
        assert (run / "figures" / f"{name}.png").stat().st_size > 0
    summary = json.loads((run / "summary.json").read_text())["evaluate"]
    assert summary["log_px"] == pytest.approx(diag["log_px"]) and summary["split"] == "test"


def test_evaluate_refuses_k_below_one(runs, capsys):
    assert main(["evaluate", str(runs[0]), "--num-samples", "0", "--limit", "4"]) == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_compare_writes_tables_and_figure(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", *map(str, runs), "--num-samples", "4", "--limit", "16", "--out", str(out)]
    assert main(argv) == 0
    assert "Δ log p̂ from best" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert sorted(r["model"] for r in rows) == ["small", "wide"]
    assert [r["rank"] for r in rows] == ["1", "2"]  # ranks from 1, as the report
    assert float(rows[0]["d_log_px"]) == 0 and float(rows[1]["d_log_px"]) >= 0
    assert float(rows[0]["test_nll"]) <= float(rows[1]["test_nll"])
    assert (out / "comparison.md").read_text().startswith("| rank |")
    assert (out / "comparison.png").stat().st_size > 0


def test_compare_refuses_runs_on_different_test_points(runs, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(runs[1], other)
    config = json.loads((other / "config.json").read_text())
    config["data"]["options"]["seed"] = 7
    (other / "config.json").write_text(json.dumps(config))
    assert main(["compare", str(runs[0]), str(other), "--num-samples", "2", "--limit", "8"]) == 2
    assert "same test points" in capsys.readouterr().err


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    """A β = 0 run: a point-mass guide, no density q(z|x)."""
    run = tmp_path_factory.mktemp("ae") / "ae"
    assert main(["train", *TINY, "--latent-dim", "2", "--beta", "0", "--out", str(run)]) == 0
    return run


def test_evaluate_a_beta_zero_run_reports_reconstruction_only(autoencoder, capsys):
    run = autoencoder
    for extra in ([], ["--num-samples", "25"]):
        assert main(["evaluate", str(run), "--limit", "16", *extra]) == 0
        out = capsys.readouterr().out
        assert "reconstruction-only 'ELBO' (not a bound)" in out and "point mass" in out
        s = json.loads((run / "summary.json").read_text())["evaluate"]
        assert s["is_bound"] is False and s["elbo"] == s["reconstruction"] and s["kl"] == 0
        assert s["num_datapoints"] == 16 and "reconstruction term only" in s["note"]
        assert ("skipped" in s) == bool(extra) and ("skipped" in out) == bool(extra)
    assert "need a density for q(z|x)" in s["skipped"] and "'z' is a point mass" in s["skipped"]
    assert not (run / "eval" / "inference_data.nc").exists()


def test_compare_flags_a_beta_zero_run_instead_of_crashing(autoencoder, runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", str(autoencoder), str(runs[0]), "--num-samples", "4", "--limit", "16"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| – | ae † |" in printed and "not ranked (not a bound: point-mass guide): ae" in printed
    rows = {r["model"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    assert rows["small"]["rank"] == "1" and rows["small"]["is_bound"] == "True"
    assert rows["ae"]["rank"] == "" and rows["ae"]["is_bound"] == "False"
    assert rows["ae"]["test_nll"] == "nan" and float(rows["ae"]["reconstruction"]) < 0
    assert rows["ae"]["note"].startswith("not a bound: point-mass guide")
    assert (out / "comparison.png").stat().st_size > 0
    only = tmp_path / "only"  # nothing to rank: the tables, no figure
    assert main(["compare", str(autoencoder), "--num-samples", "4", "--out", str(only)]) == 0
    assert (only / "comparison.csv").exists() and not (only / "comparison.png").exists()
