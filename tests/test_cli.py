"""``pyro-gen`` end to end on tiny data: every verb, resume, config files, help, the script."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_gen.cli import build_parser, main
from pyro_gen.data import make_shapes
from pyro_gen.evaluate import evaluate_elbo
from pyro_gen.models import load_model, read_config

TINY = (
    "--num-train 256 --num-valid 64 --num-test 64 --image-size 16 --batch-size 32 --hidden 32 "
    "--latent-dim 2 --no-progress"
).split()
PNG = b"\x89PNG\r\n\x1a\n"


def tiny_test_split() -> torch.Tensor:
    """The test split the CLI builds from TINY (shapes are generated from the seed, 0)."""
    return make_shapes(num_train=256, num_valid=64, num_test=64, size=16, seed=0).split("test")


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One run trained for one epoch (8 steps), shared by the read-only verbs."""
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    return run


def test_train_writes_a_complete_run(trained):
    run = trained
    for name in ("config.json", "model.safetensors", "history.csv", "summary.json"):
        assert (run / name).is_file(), name
    for name in ("training_curves", "samples", "reconstructions"):
        assert is_png(run / "figures" / f"{name}.png"), name
    assert list((run / "checkpoints").iterdir())

    config = read_config(run)
    assert config["model"]["name"] == "vae"
    args = config["model"]["args"]
    assert args["data_shape"] == [1, 16, 16] and args["latent_dim"] == 2 and args["hidden"] == [32]
    assert config["data"]["name"] == "shapes"
    assert config["data"]["options"]["num_train"] == 256
    assert config["train"]["epochs"] == 1 and config["train"]["batch_size"] == 32

    s = summary(run)["train"]
    assert s["steps"] == 8 and s["epochs"] == 1  # 256 / 32
    ev = s["test_elbo"]
    assert ev["num_datapoints"] == 64
    assert ev["elbo"] == pytest.approx(ev["reconstruction"] - ev["kl"], abs=1e-3)
    assert -16 * 16 * 2 < ev["elbo"] < 0 and ev["kl"] > 0
    assert s["best_valid_elbo"] is not None and s["best_valid_elbo"] < 0

    rows = history(run)
    assert int(rows[-1]["step"]) == 8 and rows[-1]["valid_elbo"] != ""
    assert float(rows[-1]["loss"]) > 0


def test_capture_off_trains_the_same_run(trained, tmp_path):
    """The default replays captured steps; --capture off runs Pyro every step: same numbers."""
    run = tmp_path / "eager"
    assert main(["train", *TINY, "--epochs", "1", "--capture", "off", "--out", str(run)]) == 0
    assert read_config(run)["train"]["capture"] == "off"
    assert read_config(trained)["train"]["capture"] == "auto"
    for a, b in zip(history(trained), history(run), strict=True):
        assert (a["step"], a["loss"], a["valid_elbo"]) == (b["step"], b["loss"], b["valid_elbo"])


def test_sample(trained, capsys):
    before = (trained / "figures" / "samples.png").read_bytes()
    assert main(["sample", str(trained), "--num", "8", "--seed", "3"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert is_png(trained / "figures" / "sample-seed3.png")
    # the training run's figure is not overwritten
    assert (trained / "figures" / "samples.png").read_bytes() == before
    s = summary(trained)["sample"]
    assert s["num"] == 8 and s["seed"] == 3
    assert "train" in summary(trained)  # earlier sections are kept
    assert main(["sample", str(trained), "--num", "0"]) == 2
    assert "--num must be >= 1" in capsys.readouterr().err


def test_reconstruct(trained, capsys):
    before = (trained / "figures" / "reconstructions.png").read_bytes()
    assert main(["reconstruct", str(trained), "--num", "12", "--seed", "7"]) == 0
    assert "reconstructions-seed7.png" in capsys.readouterr().out
    assert is_png(trained / "figures" / "reconstructions-seed7.png")
    # the training run's figure stays as train wrote it
    assert (trained / "figures" / "reconstructions.png").read_bytes() == before
    s = summary(trained)["reconstruct"]
    assert s["num"] == 12 and s["split"] == "test" and 0 <= s["mean_abs_error"] <= 1


def test_evaluate_matches_the_library(trained, capsys):
    assert main(["evaluate", str(trained), "--num-particles", "2"]) == 0
    out = capsys.readouterr().out
    assert "test ELBO" in out
    s = summary(trained)["evaluate"]
    assert s["split"] == "test" and s["num_datapoints"] == 64 and s["num_particles"] == 2
    assert s["elbo"] == pytest.approx(s["reconstruction"] - s["kl"], abs=1e-3)
    lib = evaluate_elbo(load_model(trained), tiny_test_split(), num_particles=2, seed=0)
    assert s["elbo"] == pytest.approx(lib.summary()["elbo"], abs=1e-4)

    assert main(["evaluate", str(trained), "--limit", "10"]) == 0
    assert summary(trained)["evaluate"]["num_datapoints"] == 10
    assert main(["evaluate", str(trained), "--split", "tset"]) == 2
    assert "Did you mean 'test'" in capsys.readouterr().err


def test_resume_continues_the_run(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = history(run)
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert summary(run)["train"]["steps"] == 16
    after = history(run)
    assert int(after[-1]["step"]) == 16
    assert after[: len(before)] == before  # the first epoch's rows are kept as they were
    assert read_config(run)["model"] == read_config(trained)["model"]


def test_resume_takes_model_and_data_flags_that_repeat_the_runs_own_values(
    trained, tmp_path, capsys
):
    """The command that started a run, plus --resume, continues it; a changed value is refused."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    again = ["train", *TINY, "--out", str(run), "--resume", "--epochs", "2"]
    assert main(again) == 0
    assert summary(run)["train"]["steps"] == 16
    assert main([*again[:-1], "3", "--hidden", "64"]) == 2
    err = capsys.readouterr().err
    assert "--hidden would be ignored" in err and "--num-train" not in err


def test_resume_needs_a_run(tmp_path, capsys):
    assert main(["train", "--resume", "--no-progress"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "none"), "--no-progress"]) == 2
    assert "error" in capsys.readouterr().err


def test_existing_run_is_not_overwritten(trained, capsys):
    assert main(["train", *TINY, "--epochs", "1", "--out", str(trained)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_config_file_and_flags(tmp_path):
    settings = {
        "num-train": 64,
        "num_valid": 32,
        "num_test": 32,
        "image_size": 16,
        "batch_size": 32,
        "hidden": [16],
        "latent_dim": 3,
        "epochs": 1,
        "progress": False,
        "lr": 0.002,
    }
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            str(path),
            "--latent-dim",
            "4",
            "--model-arg",
            'activation="tanh"',
            "--out",
            str(run),
        ]
    )
    assert code == 0
    config = read_config(run)
    args = config["model"]["args"]
    assert args["latent_dim"] == 4  # the flag overrides the file
    assert args["hidden"] == [16] and args["activation"] == "tanh"
    assert config["train"]["lr"] == 0.002 and config["data"]["options"]["num_train"] == 64
    assert summary(run)["train"]["steps"] == 2


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"latnet_dim": 3}, "unknown setting 'latnet_dim'"),
        ({"epochs": "two"}, "'epochs' should be int"),
        ({"optimizer": "adma"}, "Did you mean 'adam'"),
    ],
)
def test_bad_config_file_exits_2_with_a_message(tmp_path, capsys, settings, message):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"num_train": 64, "image_size": 16, **settings}))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-gen train: error:") and message in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _verbs() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    return sorted(sub.choices)


@pytest.mark.parametrize("verb", [None, *_verbs()])
def test_help_of_each_verb(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"] if verb is None else [verb, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pyro-gen" + ("" if verb is None else f" {verb}"))
    if verb is None:
        assert all(v in out for v in ("train", "sample", "reconstruct", "evaluate"))


def test_unknown_verb_and_option_exit_2(capsys):
    for argv in (["trian"], ["train", "--latent-dims", "3"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script():
    script = Path(sys.executable).parent / "pyro-gen"
    if not script.exists():
        found = shutil.which("pyro-gen")
        assert found, "the pyro-gen console script is not installed (pip install -e .)"
        script = Path(found)
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: pyro-gen") and "train" in out.stdout
