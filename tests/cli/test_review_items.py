"""Edge cases a reviewer passed through silently: an SSVAE's --num-labels 0 (a classifier that
never sees a label) or more labels than training images; evaluate on the train split; a CVAE
on a data set without labels; a model with no latent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyro_gen.cli import main

TINY = [
    "--data", "shapes", "--num-train", "96", "--num-valid", "32", "--num-test", "32",
    "--image-size", "16", "--epochs", "1", "--batch-size", "32", "--latent-dim", "2",
    "--hidden", "8", "--no-progress",
]  # fmt: skip
SSVAE = ["--model", "ssvae", "--classifier-hidden", "8", "--classifier-layers", "8"]


def test_more_labels_than_training_images_is_an_error_naming_both(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, *SSVAE, "--num-labels", "5000", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "num_labels 5000" in err and "96 training images" in err
    assert not (run / "config.json").exists()


def test_the_default_num_labels_is_recorded_as_the_images_there_are(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, *SSVAE, "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["args"]["num_labels"] == 96  # not the default 3000


def test_no_labels_warns_and_its_accuracy_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="num_labels = 0"):
        assert main(["train", *TINY, *SSVAE, "--num-labels", "0", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "accuracy of q(y|x)" in out and "trained with no labels" in out
    test = json.loads((run / "summary.json").read_text())["train"]["test_classifier"]
    assert "no labels" in test["note"]
    assert main(["evaluate", str(run), "--limit", "16"]) == 0
    assert "trained with no labels" in capsys.readouterr().out
    html = (run / "report.html").read_text()
    assert "q(y|x)&#39;s scores: trained with no labels" in html or (
        "q(y|x)'s scores: trained with no labels" in html
    )


def test_evaluate_on_the_train_split_names_its_two_kinds_of_rows_and_its_split(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, *SSVAE, "--num-labels", "40", "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--num-samples", "25", "--limit", "16"]) == 0  # test
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "40 labelled rows, whose ELBO bounds log p(x, y)" in out
    assert "56 unlabelled rows, whose ELBO bounds log p(x)" in out
    assert "labelled images q(y|x) was trained on" in out  # the accuracy is optimistic
    ev = json.loads((run / "summary.json").read_text())["evaluate"]
    assert ev["split"] == "train" and (ev["num_labelled"], ev["num_unlabelled"]) == (40, 56)
    assert abs((40 * ev["elbo_labelled"] + 56 * ev["elbo_unlabelled"]) / 96 - ev["elbo"]) < 1e-4
    assert ev["bound_on"].startswith("log p(x, y) on the 40 labelled rows and log p(x) on")
    html = (run / "report.html").read_text()
    assert "ELBO of the 40 labelled rows" in html and "ELBO of the 56 unlabelled rows" in html
    # the figures are still the test split's importance-sampled ones: said so
    assert "the figures below are of the test split" in html
    assert "test split (eval/diagnostics.json). Mean KL per latent dimension" in html
    # with importance sampling log p(x | y) of mixed rows is no quantity: the parts instead
    assert main(["evaluate", str(run), "--split", "train", "--num-samples", "25"]) == 0
    diag = json.loads((run / "eval" / "diagnostics.json").read_text())
    assert "log_px_given_attributes" not in diag and diag["split"] == "train"
    assert diag["log_px_labelled"] > diag["elbo_labelled"]  # the same draws: gap >= 0


def test_evaluate_on_a_model_without_a_latent_says_so_and_draws_no_empty_figures(tmp_path, capsys):
    run = tmp_path / "run"
    made = ["--model", "made", "--hidden", "8"]
    data = TINY[: TINY.index("--latent-dim")]
    assert main(["train", *data, *made, "--no-progress", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "; test log p(x) " in out and "= reconstruction" not in out  # train's line too
    assert main(["evaluate", str(run), "--limit", "16"]) == 0  # the ELBO path: log p(x) itself
    out = capsys.readouterr().out
    assert "test log p(x) " in out and ", exact (no latent variable" in out
    assert "reconstruction" not in out and "KL" not in out
    assert main(["evaluate", str(run), "--num-samples", "5", "--limit", "16"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "no latent variable: log p(x) is exact" in out
    for name in ("kl_per_dimension", "khat", "log_px_vs_elbo"):
        assert not (run / "figures" / f"{name}.png").exists()
    html = (run / "report.html").read_text()
    assert "test log p(x) " in html and "test ELBO" not in html  # the headline sentence
    assert "<td>k̂, ESS, active units</td><td>n/a</td>" in html
    assert "exact: no latent variable" in html and "nan%" not in html
    assert "reliability" not in html and "active units</td><td>0 of 0" not in html


DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.skipif(
    not (DATA / "binarized_mnist.npz").is_file(), reason="../shared/data has no binarized MNIST"
)
def test_a_cvae_on_binarized_mnist_is_pointed_to_the_labelled_mnist(tmp_path, capsys):
    args = ["train", "--model", "cvae", "--data", "binarized_mnist", "--data-dir", str(DATA)]
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "neither labels nor attributes" in err and "use --data mnist" in err


@pytest.mark.parametrize(
    "model, verb, says",
    [
        (["--model", "made", "--hidden", "8"], "traverse", "no latent variable"),
        (["--model", "made", "--hidden", "8"], "reconstruct", "no latent variable"),
        (["--model", "hvae", "--latent-dims", "3,2", "--hidden", "8"], "interpolate", "two layers"),
        (
            ["--model", "ssvae", "--num-labels", "32", "--hidden", "8"],
            "traverse",
            "takes the label",
        ),
    ],
)
def test_a_latent_verb_on_a_shipped_model_without_it_says_what_the_model_lacks(
    tmp_path, capsys, model, verb, says
):
    run = tmp_path / "run"
    data = TINY[: TINY.index("--latent-dim")]
    assert main(["train", *data, *model, "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main([verb, str(run)]) == 2
    err = capsys.readouterr().err
    assert says in err and "give the model class" not in err


def test_a_made_runs_report_table_reads_log_p_x_exact_before_importance_sampling(tmp_path):
    run = tmp_path / "run"
    data = TINY[: TINY.index("--latent-dim")]
    assert main(["train", *data, "--model", "made", "--hidden", "8", "--out", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "<td>log p(x), exact</td>" in html and "a lower bound on log p(x)" not in html
    assert "reconstruction E_q log p(x|z)" not in html
