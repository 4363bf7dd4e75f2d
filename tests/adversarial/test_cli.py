"""The GAN through the CLI: train (the adversarial step), resume, sample, quality; the density
verbs refuse it with the reason; quality works on a VAE run too."""

from __future__ import annotations

import json

import pytest

from pyro_gen.cli import main

DATA = ["--data", "shapes", "--num-train", "256", "--num-valid", "32", "--num-test", "64",
        "--image-size", "16"]  # fmt: skip
QUALITY = ["--num", "48", "--judge-train", "256", "--judge-epochs", "1"]


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("gan") / "run"
    argv = ["train", "--model", "gan", *DATA, "--hidden", "32", "--critic-hidden", "32",
            "--objective", "wgan-gp", "--critic-steps", "2", "--max-steps", "4",
            "--batch-size", "32", "--out", str(run), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    return run


def test_train_writes_a_gan_run(gan_run, capsys):
    config = json.loads((gan_run / "config.json").read_text())
    assert config["model"]["name"] == "gan"
    assert config["model"]["args"]["objective"] == "wgan-gp"
    summary = json.loads((gan_run / "summary.json").read_text())["train"]
    assert summary["steps"] == 4 and "final_divergence" in summary
    assert summary["final_divergence_estimates"].startswith("W₁(P, Q)")  # what the number is
    assert "test_elbo" not in summary
    header = (gan_run / "history.csv").read_text().splitlines()[0]
    assert "critic_loss" in header and "divergence" in header
    assert (gan_run / "figures" / "samples.png").is_file()


def test_resume_continues_the_gan(gan_run, capsys):
    assert main(["train", "--out", str(gan_run), "--resume", "--max-steps", "6",
                 "--no-progress"]) == 0  # fmt: skip
    assert "this session 2 steps" in capsys.readouterr().out


def test_density_verbs_refuse_and_say_what_instead(gan_run, capsys):
    assert main(["evaluate", str(gan_run)]) == 2
    err = capsys.readouterr().err
    assert "no density p(x | z)" in err and "pyro-gen quality" in err
    assert main(["reconstruct", str(gan_run)]) == 2
    assert "cannot encode an image" in capsys.readouterr().err


def test_quality_writes_metrics_and_figures(gan_run, capsys):
    assert main(["quality", str(gan_run), *QUALITY]) == 0
    out = json.loads((gan_run / "eval" / "quality.json").read_text())
    for key in ("c2st_accuracy", "frechet_distance", "precision", "recall", "mmd2"):
        assert key in out
    assert out["features"] == "classifier" and len(out["classes_counts"]) == 3
    assert (gan_run / "figures" / "class_histogram.png").is_file()
    assert (gan_run / "eval" / "judge" / "judge.json").is_file()
    assert "quality" in json.loads((gan_run / "summary.json").read_text())


@pytest.mark.slow
def test_quality_of_a_vae_run_and_compare(gan_run, tmp_path, capsys):
    run = tmp_path / "vae"
    assert main(["train", *DATA, "--hidden", "32", "--max-steps", "3", "--batch-size", "32",
                 "--out", str(run), "--no-progress"]) == 0  # fmt: skip
    assert main(["quality", str(run), *QUALITY]) == 0
    assert json.loads((run / "eval" / "quality.json").read_text())["samples"] == "E[x|z]"
    # compare: the VAE ranked by log p(x), both runs in the sample-quality table
    if not (gan_run / "eval" / "quality.json").exists():
        assert main(["quality", str(gan_run), *QUALITY]) == 0
    capsys.readouterr()
    assert main(["compare", str(run), str(gan_run), "--num-samples", "4", "--limit", "16",
                 "--out", str(tmp_path / "cmp")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    table = (tmp_path / "cmp" / "comparison_quality.md").read_text()
    assert "| vae |" in table and "| run |" in table and "likelihood-free" in out
    assert (tmp_path / "cmp" / "comparison.md").is_file()


def test_compare_of_a_gan_run_shows_its_sample_quality(gan_run, capsys, tmp_path):
    if not (gan_run / "eval" / "quality.json").exists():
        assert main(["quality", str(gan_run), *QUALITY]) == 0
    capsys.readouterr()
    assert main(["compare", str(gan_run), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Sample quality" in out and "likelihood-free" in out
    assert "| run |" in (tmp_path / "comparison_quality.md").read_text()


def test_quality_records_its_judge_and_compare_warns_when_judges_differ(gan_run, tmp_path, capsys):
    import shutil

    import torch

    from pyro_gen.cli.common import subset
    from pyro_gen.data import make_shapes

    if not (gan_run / "eval" / "quality.json").exists():
        assert main(["quality", str(gan_run), *QUALITY]) == 0
    q = json.loads((gan_run / "eval" / "quality.json").read_text())
    judge = q["judge"]
    assert judge["digest"].startswith("sha256:") and 0.0 <= judge["heldout_accuracy"] <= 1.0
    assert judge["path"] == str((gan_run / "eval" / "judge").resolve())
    # the real class proportions are the true labels of the 48 test images drawn (seed 0)
    assert q["classes_reference"] == "true labels"
    labels = subset(make_shapes(256, 32, 64, 16, 0).labels["test"], 48, 0)
    true = (torch.bincount(labels, minlength=len(q["classes_real_proportions"])) / 48).tolist()
    assert q["classes_real_proportions"] == pytest.approx(true)
    # a copy of the run measured with its own judge (another seed): compare must warn
    other = tmp_path / "other"
    shutil.copytree(gan_run, other)
    shutil.rmtree(other / "eval")
    assert main(["quality", str(other), *QUALITY, "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["compare", str(gan_run), str(other), "--out", str(tmp_path / "c1")]) == 0
    table = (tmp_path / "c1" / "comparison_quality.md").read_text()
    assert "different judges" in table and "--judge" in table
    # one judge for both: no warning, the same digest in both rows
    assert main(["quality", str(other), *QUALITY, "--judge", str(gan_run / "eval" / "judge")]) == 0
    assert main(["compare", str(gan_run), str(other), "--out", str(tmp_path / "c2")]) == 0
    table = (tmp_path / "c2" / "comparison_quality.md").read_text()
    assert "different judges" not in table and table.count(judge["digest"]) == 2


def test_quality_help():
    with pytest.raises(SystemExit) as e:
        main(["quality", "--help"])
    assert e.value.code == 0
