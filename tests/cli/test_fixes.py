"""CLI outputs that used to mislead: a resumed run's speed, the flag syntax in --config files."""

from __future__ import annotations

import json
import re

import pytest

from pyro_gen.cli import main
from pyro_gen.cli.train import steps_line
from pyro_gen.models import read_config

TINY = (
    "--num-train 64 --num-valid 32 --num-test 32 --image-size 16 --batch-size 32 --latent-dim 2 "
    "--no-progress"
).split()


def test_the_steps_line_keeps_a_session_s_steps_with_its_time_and_rate():
    assert steps_line(780, 780, 6.2, 125.8) == "780 steps in 6.2 s (125.8 steps/s)"
    line = steps_line(780, 156, 6.2, 25.2)
    assert line == "this session 156 steps in 6.2 s (25.2 steps/s); 780 steps in all"


@pytest.mark.slow  # two trainings (~5 CPU-s); the line itself is pinned above
def test_a_resumed_run_gives_this_session_s_steps_with_its_time_and_rate(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--hidden", "16", "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"this session 4 steps in [\d.]+ s \([\d.]+ steps/s\); 6 steps in all", out), (
        out
    )
    train = json.loads((run / "summary.json").read_text())["train"]
    assert (train["steps"], train["steps_this_session"]) == (6, 4)


def test_config_file_takes_the_flag_syntax_of_a_list(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"hidden": "16,8", "max_steps": 1}))
    run = tmp_path / "run"
    assert main(["train", *TINY, "--config", str(config), "--out", str(run)]) == 0
    assert read_config(run)["model"]["args"]["hidden"] == [16, 8]
    config.write_text(json.dumps({"hidden": "16;8"}))
    assert main(["train", *TINY, "--config", str(config), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "hidden in" in err and "[256, 128]" in err and "Traceback" not in err


def test_train_shows_random_test_rows_not_the_first(tmp_path, monkeypatch):
    """A split sorted by label (binarized MNIST's test) showed one digit in reconstructions."""
    import torch

    from pyro_gen import plots
    from pyro_gen.data import make_shapes

    seen = {}
    original = plots.reconstruction_figure

    def spy(x, x_hat, *args, **kwargs):
        seen["x"] = x.clone()
        return original(x, x_hat, *args, **kwargs)

    monkeypatch.setattr(plots, "reconstruction_figure", spy)
    assert main(["train", *TINY, "--hidden", "8", "--max-steps", "1", "--seed", "3",
                 "--out", str(tmp_path / "run")]) == 0  # fmt: skip
    test = make_shapes(num_train=64, num_valid=32, num_test=32, size=16, seed=3).split("test")
    rows = torch.randperm(32, generator=torch.Generator().manual_seed(3))[:20]
    assert torch.equal(seen["x"], test[rows]) and not torch.equal(seen["x"], test[:20])


def test_reconstruct_shows_random_rows_not_the_first(tmp_path, monkeypatch):
    """The reconstruct verb too (it showed the first --num rows: one digit on binarized MNIST)."""
    import torch

    from pyro_gen import plots
    from pyro_gen.data import make_shapes

    run = tmp_path / "run"
    assert main(["train", *TINY, "--hidden", "8", "--max-steps", "1", "--seed", "3",
                 "--out", str(run)]) == 0  # fmt: skip
    seen = {}
    original = plots.reconstruction_figure

    def spy(x, x_hat, *args, **kwargs):
        seen["x"] = x.clone()
        return original(x, x_hat, *args, **kwargs)

    monkeypatch.setattr(plots, "reconstruction_figure", spy)
    assert main(["reconstruct", str(run), "--num", "6", "--seed", "5"]) == 0
    test = make_shapes(num_train=64, num_valid=32, num_test=32, size=16, seed=3).split("test")
    rows = torch.randperm(32, generator=torch.Generator().manual_seed(5))[:6]
    assert torch.equal(seen["x"], test[rows]) and not torch.equal(seen["x"], test[:6])
