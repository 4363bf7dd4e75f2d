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
