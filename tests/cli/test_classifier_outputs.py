"""A semi-supervised or conditional run's classifier q(y|x), its ELBO parts and compare, from
the command line: train (line, summary.json, history.csv), evaluate (line, eval/classifier.json,
summary.json), compare (the quantity each row is of, ranks from 1) and the run report."""

from __future__ import annotations

import csv
import json

import pytest

from pyro_gen.cli import main

TINY = [
    "--data", "shapes", "--num-train", "192", "--num-valid", "48", "--num-test", "48",
    "--image-size", "16", "--epochs", "2", "--batch-size", "64", "--latent-dim", "2",
    "--hidden", "16", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, extra in (
        ("ssvae", ["--model", "ssvae", "--elbo", "enum", "--num-labels", "50",
                   "--classifier-hidden", "16", "--classifier-layers", "16"]),
        ("cvae", ["--model", "cvae", "--missing"]),
    ):  # fmt: skip
        out[name] = root / name
        assert main(["train", *TINY, *extra, "--out", str(out[name])]) == 0
    return out


def _summary(run):
    return json.loads((run / "summary.json").read_text())


def test_train_reports_the_classifier_on_test_and_validation(runs):
    train = _summary(runs["ssvae"])["train"]
    for split in ("test", "valid"):
        c = train[f"{split}_classifier"]
        assert 0 <= c["accuracy"] <= 1 and c["num_datapoints"] == 48
        assert c["what"].startswith(f"{split} accuracy of q(y|x)")
    with open(runs["ssvae"] / "history.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["valid_elbo"]]
    assert len(rows) == 2 and all(0 <= float(r["valid_accuracy"]) <= 1 for r in rows)
    cvae = _summary(runs["cvae"])["train"]
    assert {"shape_accuracy", "scale_mae"} <= set(cvae["test_classifier"])


def test_train_and_evaluate_split_a_cvae_elbo_and_print_the_accuracy(runs, capsys):
    ev = _summary(runs["cvae"])["train"]["test_elbo"]
    parts = ev["reconstruction"] + ev["attributes_log_prob"] - ev["kl"]
    assert ev["elbo"] == pytest.approx(parts, abs=1e-4)
    assert ev["bound_on"].startswith("log p(x, shape")
    assert main(["evaluate", str(runs["ssvae"]), "--limit", "20"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy of q(y|x)" in printed and "(20 datapoints" in printed
    saved = json.loads((runs["ssvae"] / "eval" / "classifier.json").read_text())
    assert saved["num_datapoints"] == 20 and 0 <= saved["accuracy"] <= 1
    assert _summary(runs["ssvae"])["evaluate"]["classifier"]["accuracy"] == saved["accuracy"]
    assert main(["evaluate", str(runs["cvae"])]) == 0
    printed = capsys.readouterr().out
    assert "reconstruction of x" in printed and "of the observed attributes" in printed
    assert "a bound on log p(x, shape" in printed and "shape " in printed
    ais = ["--method", "ais", "--num-steps", "4", "--num-chains", "2", "--limit", "4"]
    assert main(["evaluate", str(runs["cvae"]), *ais, "--no-progress"]) == 0
    a = _summary(runs["cvae"])["evaluate_ais"]
    assert a["log_px_is"].startswith("log p(x, shape") and "log_px_given_attributes" in a
    assert "test log p(x, shape" in capsys.readouterr().out
    html = (runs["ssvae"] / "report.html").read_text()
    assert "Classifier q(y|x)" in html and "test accuracy of q(y|x)" in html


def test_compare_names_what_each_row_is_a_density_of(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = [str(runs[k]) for k in ("cvae", "ssvae")]
    assert main(["compare", *argv, "--num-samples", "5", "--limit", "12", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    with open(out / "comparison.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert rows["ssvae"]["quantity"] == "log p(x)"  # its test labels are summed out
    assert rows["cvae"]["quantity"].startswith("log p(x | shape")
    assert rows["cvae"]["rank"] == rows["ssvae"]["rank"] == "1"  # each within its quantity
    assert "WARNING: these runs' numbers are densities of different things" in printed
    assert "| ssvae | accuracy |" in printed and "| cvae | shape_accuracy |" in printed
