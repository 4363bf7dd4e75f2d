"""Issue 14's review: list flags split on whitespace too, a broken pipe ends quietly."""

from __future__ import annotations

import argparse
import json

import pytest

from pyro_gen.cli import build_parser, main
from pyro_gen.cli.common import int_list
from pyro_gen.models.persistence import read_config

TINY = (
    "--num-train 64 --num-valid 32 --num-test 32 --image-size 16 --batch-size 32 --latent-dim 2 "
    "--no-progress"
).split()


@pytest.mark.parametrize("text", ["256,128", "256 128", "256, 128", " 256  128 ", "256,\t128"])
def test_int_list_splits_on_commas_and_whitespace(text):
    assert int_list(text) == [256, 128]  # not [256128]


@pytest.mark.parametrize("text", ["256;128", "256.5", "a b"])
def test_int_list_refuses_what_is_no_list_of_integers(text):
    with pytest.raises(argparse.ArgumentTypeError, match="separated by commas or spaces"):
        int_list(text)


def test_the_hidden_flag_takes_a_space_separated_list():
    args = build_parser("vae").parse_args(["train", "--hidden", "256 128", "--out", "x"])
    assert args.hidden == [256, 128]


def test_a_config_file_takes_a_space_separated_list(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"hidden": "16 8", "max_steps": 1}))
    run = tmp_path / "run"
    assert main(["train", *TINY, "--config", str(config), "--out", str(run)]) == 0
    assert read_config(run)["model"]["args"]["hidden"] == [16, 8]


def test_pyro_gen_s_warnings_are_one_line_notes_in_the_cli(monkeypatch):
    import warnings

    import pyro_gen.cli as cli

    ours = cli.__file__.replace("__init__.py", "train.py")
    line = cli._format_warning(UserWarning("not a bound"), UserWarning, ours, 584, "src")
    assert line == "pyro-gen: note: not a bound\n"
    other = cli._format_warning(UserWarning("x"), UserWarning, "/elsewhere/lib.py", 3, "src")
    assert "lib.py:3" in other  # another library's warning keeps Python's format
    seen = {}

    def verb(args):
        seen["format"] = warnings.formatwarning
        return 0

    monkeypatch.setitem(cli.COMMANDS, "report", verb)
    before = warnings.formatwarning
    assert cli.main(["report", "x"]) == 0
    assert seen["format"] is cli._format_warning and warnings.formatwarning is before


def test_a_beta_zero_run_s_best_is_named_a_reconstruction(tmp_path):
    run = tmp_path / "run"
    argv = ["train", *TINY, "--beta", "0", "--max-steps", "2", "--out", str(run)]
    assert main(argv) == 0
    best = json.loads((run / "summary.json").read_text())["train"]["best"]
    assert "valid_reconstruction" in best and "valid_elbo" not in best


def test_the_steps_line_puts_the_loop_s_time_beside_the_loop_s_rate():
    from pyro_gen.cli.train import steps_line

    # 24 steps at 8 steps/s took 3 s in the loop; 9 s with setup: both said, each labelled
    line = steps_line(24, 24, 9.0, 8.0)
    assert line == "24 steps in 3.0 s of training (8 steps/s; 9.0 s with setup)"
    line = steps_line(48, 24, 9.0, 8.0)
    assert line == (
        "this session 24 steps in 3.0 s of training (8 steps/s; 9.0 s with setup); 48 steps in all"
    )
    assert steps_line(780, 780, 6.2, 125.8) == "780 steps in 6.2 s (125.8 steps/s)"  # agree
