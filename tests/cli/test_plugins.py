"""``pyro-gen`` with a user's own registered model (``--import``), runs written from the Python
API (no data spec), model flags from the constructor's signature, models without sample()."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pyro_gen.cli import build_parser, main
from pyro_gen.data import make_shapes
from pyro_gen.infer import Trainer
from pyro_gen.models import MODELS, VAE, read_config

TINY = (
    "--num-train 200 --num-valid 0 --num-test 50 --image-size 16 --batch-size 50 --epochs 1 "
    "--no-progress"
).split()
MODULE = "cli_user_models"  # the user's module, written into a temporary folder
SOURCE = '''
"""A user's models: registered under their own names, outside pyro_gen."""
from pyro_gen.models import VAE, register_model


@register_model("cli_test_vae")
class SmallVAE(VAE):
    """A small VAE.

    Args:
        width_scale: how much wider the
            hidden layers are (a ``float``).
        tag: a free-form label.
    """

    def __init__(
        self,
        data_shape=(1, 28, 28),
        latent_dim: int = 3,
        hidden=(32,),
        width_scale: float = 1.0,
        tag: str = "plain",
    ):
        super().__init__(data_shape=data_shape, latent_dim=latent_dim, hidden=hidden)
        self.width_scale, self.tag = width_scale, tag


@register_model("cli_test_nosample")
class NoSampleVAE(VAE):
    """A model that cannot draw new data nor reconstruct (as, say, a classifier-like family)."""

    sample = None
    reconstruct = None
'''
NAMES = ("cli_test_vae", "cli_test_nosample")


def forget_user_module() -> None:
    """As in a new process: the user's module is not imported, its models not registered."""
    for name in NAMES:
        MODELS.pop(name, None)
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / f"{MODULE}.py").write_text(SOURCE)
    forget_user_module()
    yield folder
    forget_user_module()


@pytest.fixture(scope="module")
def user_run(user_dir):
    """A run of the user's model, trained with --import MODULE (a dotted name from the cwd)."""
    run = user_dir / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(user_dir)
        argv = ["train", "--import", MODULE, "--model", "cli_test_vae", "--width-scale", "0.5"]
        assert main([*argv, "--tag", "mine", *TINY, "--out", str(run)]) == 0
    forget_user_module()
    return run


def test_train_with_import_records_the_module_and_the_derived_flags(user_run):
    config = read_config(user_run)
    assert config["imports"] == [MODULE]
    assert config["model"]["name"] == "cli_test_vae"
    args = config["model"]["args"]
    assert args["width_scale"] == 0.5 and args["tag"] == "mine"  # flags from the signature
    assert args["latent_dim"] == 3 and args["data_shape"] == [1, 16, 16]  # its own default
    assert (user_run / "figures" / "samples.png").is_file()


def test_other_verbs_import_the_recorded_module(user_run, monkeypatch, capsys):
    monkeypatch.chdir(user_run.parent)  # where the module is importable, without --import
    forget_user_module()
    assert main(["evaluate", str(user_run), "--limit", "16"]) == 0
    assert "test ELBO" in capsys.readouterr().out
    assert "cli_test_vae" in MODELS  # imported from config.json's 'imports'
    forget_user_module()
    assert main(["sample", str(user_run), "--num", "4"]) == 0
    forget_user_module()
    assert main(["reconstruct", str(user_run), "--num", "4"]) == 0
    forget_user_module()
    argv = ["compare", str(user_run), "--num-samples", "2", "--limit", "8"]
    assert main([*argv, "--out", str(user_run / "cmp")]) == 0
    forget_user_module()


def test_a_module_that_cannot_be_imported_is_named(user_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the module is not importable from here
    forget_user_module()
    assert main(["evaluate", str(user_run), "--limit", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-gen evaluate: error:")
    assert f"module {MODULE!r}" in err and "'cli_test_vae'" in err and "--import" in err
    # --import with the file's path, after the verb, opens it
    path = str(user_run.parent / f"{MODULE}.py")
    assert main(["sample", str(user_run), "--num", "4", "--import", path]) == 0
    forget_user_module()
    # ... and before the verb
    assert main(["--import", path, "evaluate", str(user_run), "--limit", "8"]) == 0
    forget_user_module()


def test_a_run_of_an_unknown_model_suggests_import(user_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "model.safetensors"):
        (run / name).write_bytes((user_run / name).read_bytes())
    config = json.loads((run / "config.json").read_text())
    del config["imports"]
    (run / "config.json").write_text(json.dumps(config))
    forget_user_module()
    assert main(["sample", str(run)]) == 2
    err = capsys.readouterr().err
    assert "'cli_test_vae'" in err and "--import MODULE" in err
    assert main(["train", "--model", "cli_test_vae", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-gen train: error: unknown model 'cli_test_vae'")
    assert "--import MODULE" in err


def test_import_of_a_missing_module_or_file(tmp_path, capsys):
    assert main(["train", "--import", "no_such_module_xyz", *TINY]) == 2
    err = capsys.readouterr().err
    assert "cannot import module 'no_such_module_xyz'" in err and "ModuleNotFoundError" in err
    assert main(["sample", str(tmp_path), "--import", str(tmp_path / "nope.py")]) == 2
    assert "there is no file" in capsys.readouterr().err


def test_a_model_without_sample_trains_without_those_figures(user_dir, tmp_path, capsys):
    run = tmp_path / "run"
    path = str(user_dir / f"{MODULE}.py")
    argv = ["--import", path, "train", "--model", "cli_test_nosample", "--latent-dim", "2"]
    assert main([*argv, "--hidden", "16", *TINY, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "NoSampleVAE has no sample() method" in out
    assert "NoSampleVAE has no reconstruct() method" in out
    assert (run / "figures" / "training_curves.png").is_file()
    assert not (run / "figures" / "samples.png").exists()
    assert not (run / "figures" / "reconstructions.png").exists()
    assert read_config(run)["imports"] == [str(Path(path).resolve())]
    forget_user_module()  # the run's recorded file path brings the model back
    assert main(["sample", str(run)]) == 2
    assert "NoSampleVAE has no sample() method" in capsys.readouterr().err
    assert main(["reconstruct", str(run)]) == 2
    assert "has no reconstruct() method" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--limit", "8"]) == 0
    forget_user_module()


@pytest.fixture(scope="module")
def api_run(tmp_path_factory) -> Path:
    """A run folder written from the Python API: config.json has no 'data' section."""
    run = tmp_path_factory.mktemp("api") / "run"
    x = make_shapes(num_train=100, num_valid=0, num_test=0, size=16).split("train")
    model = VAE(data_shape=(1, 16, 16), latent_dim=2, hidden=(16,))
    Trainer(model, run_dir=run, max_steps=2, batch_size=50, progress=False).fit(x)
    assert "data" not in read_config(run)
    return run


def test_a_python_api_run_samples(api_run, capsys):
    assert main(["sample", str(api_run), "--num", "4"]) == 0
    assert (api_run / "figures" / "sample-seed0.png").is_file()


@pytest.mark.parametrize("verb", ["evaluate", "reconstruct", "compare"])
def test_a_python_api_run_needs_data_for_the_data_verbs(api_run, verb, capsys):
    assert main([verb, str(api_run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pyro-gen {verb}: error:")
    assert "has no data spec" in err and "--data NAME" in err and "Python API" in err


def test_a_python_api_run_evaluates_with_data_options(api_run, capsys):
    data = "--data shapes --num-train 10 --num-valid 0 --num-test 30 --image-size 16".split()
    assert main(["evaluate", str(api_run), *data]) == 0
    s = json.loads((api_run / "summary.json").read_text())["evaluate"]
    assert s["num_datapoints"] == 30 and s["split"] == "test"
    assert main(["reconstruct", str(api_run), "--num", "5", *data]) == 0
    argv = ["compare", str(api_run), "--num-samples", "2", "--out", str(api_run / "cmp")]
    assert main([*argv, *data]) == 0


def test_model_arg_is_checked_against_the_signature(tmp_path, capsys):
    argv = ["train", *TINY, "--hidden", "16", "--model-arg", "latnet_dim=3"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyro-gen train: error: model 'vae' has no argument 'latnet_dim'")
    assert "its arguments are: data_shape, latent_dim, likelihood" in err
    assert "Did you mean 'latent_dim'" in err
    assert not (tmp_path / "run").exists()


def test_model_flags_follow_the_models_signature(user_dir, capsys):
    vae = build_parser().parse_args(["train", "--hidden", "512,256", "--beta", "4"])
    assert vae.hidden == [512, 256] and vae.beta == 4.0
    with pytest.raises(SystemExit):  # the user's model takes no --likelihood
        main(["--import", str(user_dir / f"{MODULE}.py"), "train", "--model", "cli_test_vae",
              "--likelihood", "gaussian"])  # fmt: skip
    assert "unrecognized arguments: --likelihood" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["train", "--import", str(user_dir / f"{MODULE}.py"), "--model", "cli_test_vae",
              "--help"])  # fmt: skip
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--width-scale" in out and "--tag" in out and "--likelihood" not in out
    # help texts come from the docstrings' Args sections, the class's and then its bases'
    text = " ".join(out.split())
    assert "--width-scale WIDTH_SCALE how much wider the hidden layers are (a float)" in text
    assert "--tag TAG a free-form label (default plain)" in text
    assert "hidden widths of the MLP encoder (the decoder mirrors them); comma-separated" in text
    forget_user_module()


def test_data_options_that_would_cut_other_splits_are_refused(user_run, monkeypatch, capsys):
    """Shapes are one stream cut into train | valid | test: other sizes would make the "test"
    split hold training images, and score the run on them."""
    monkeypatch.chdir(user_run.parent)  # where the user's module is importable
    argv = ["evaluate", str(user_run), "--limit", "8"]
    assert main([*argv, "--num-train", "100"]) == 2
    err = capsys.readouterr().err
    assert "other data than" in err and "overlap the training data" in err
    assert main([*argv, "--data", "shapes", "--num-train", "100"]) == 2
    assert main(argv) == 0  # the run's own data


def test_resume_refuses_model_and_data_flags_it_would_ignore(user_run, monkeypatch, capsys):
    monkeypatch.chdir(user_run.parent)
    assert main(["train", "--out", str(user_run), "--resume", "--num-train", "100"]) == 2
    assert "--num-train would be ignored" in capsys.readouterr().err


def test_a_folder_without_checkpoints_is_not_called_resumable(tmp_path, capsys):
    run = tmp_path / "half"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert main(["train", *TINY, "--out", str(run)]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err


def test_options_are_not_abbreviated_and_bad_values_are_config_errors(tmp_path, capsys):
    # "--bet" must not silently mean --beta or --beta-schedule
    with pytest.raises(SystemExit) as exit_:
        main(["train", *TINY, "--bet", "0", "--out", str(tmp_path / "a")])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --bet" in capsys.readouterr().err
    assert (
        main(["train", *TINY, "--model-arg", "latent_dim=abc", "--out", str(tmp_path / "b")]) == 2
    )
    err = capsys.readouterr().err
    assert "could not be built" in err and "'latent_dim': 'abc'" in err
    assert not (tmp_path / "b").exists()  # nothing written


def test_a_subclass_forwarding_kwargs_keeps_its_base_class_flags(tmp_path, capsys):
    source = tmp_path / "kw_models.py"
    source.write_text(
        "from pyro_gen.models import VAE, register_model\n\n\n"
        '@register_model("cli_test_kw_vae")\n'
        "class KwVAE(VAE):\n"
        "    def __init__(self, extra: float = 1.0, **kw):\n"
        "        super().__init__(**kw)\n"
        "        self.extra = extra\n"
    )
    run = tmp_path / "run"
    argv = ["train", "--import", str(source), "--model", "cli_test_kw_vae"]
    try:
        assert main([*argv, "--extra", "2.5", "--beta", "2", *TINY, "--out", str(run)]) == 0
    finally:
        MODELS.pop("cli_test_kw_vae", None)
    config = read_config(run)["model"]
    assert config["args"]["extra"] == 2.5 and config["args"]["beta"] == 2.0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_train_help_formats_for_every_registered_model(name, capsys):
    """Every model's flags come from its constructor: none may clash with a run option (MADE's
    and the VQ-VAE's ``seed`` met the run's --seed) or break argparse's %-formatting."""
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--model", name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--model-arg" in out and "--seed" in out


def test_a_model_seed_named_like_the_run_seed_is_set_by_it_or_by_model_arg(tmp_path):
    base = ["train", "--model", "made", "--hidden", "8", *TINY]
    assert main([*base, "--seed", "3", "--out", str(tmp_path / "a")]) == 0
    assert read_config(tmp_path / "a")["model"]["args"]["seed"] == 3
    assert main([*base, "--model-arg", "seed=5", "--out", str(tmp_path / "b")]) == 0
    assert read_config(tmp_path / "b")["model"]["args"]["seed"] == 5


def test_an_int_hidden_argument_is_not_described_as_a_list():
    import argparse

    import torch

    from pyro_gen.cli.train import add_model_arguments

    class IntHidden(torch.nn.Module):
        def __init__(self, data_shape=(1, 4, 4), hidden: int = 32):
            super().__init__()

    MODELS["cli_test_int_hidden"] = IntHidden
    try:
        p = argparse.ArgumentParser()
        add_model_arguments(p, "cli_test_int_hidden")
        text = p.format_help()
        assert "e.g. 512,256" not in text and "argument 'hidden' (int) (default 32)" in text
        assert p.parse_args(["--hidden", "64"]).hidden == 64
    finally:
        MODELS.pop("cli_test_int_hidden")
