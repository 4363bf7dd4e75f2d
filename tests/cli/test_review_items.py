"""Edge cases a reviewer passed through silently: an SSVAE's --num-labels 0 (a classifier that
never sees a label) or more labels than training images; evaluate on the train split; a CVAE
on a data set without labels; a model with no latent."""

from __future__ import annotations

import json

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
    assert "The classifier was trained with no labels" in html
