"""The bad-input catalogue: every public entry point fed its likely mistakes.

Each case must raise a pyro_gen error of the stated type whose message matches (it says what was
wrong and what to do), and must leave no side effects: model parameters unchanged, no run folder
or stray files created. Cases are listed in ``API_CASES`` and ``CLI_CASES``; their count goes in
the reliability closing note.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_gen import cli
from pyro_gen.data import Dataset, load_binarized_mnist, load_dataset, load_mnist
from pyro_gen.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DataNotFoundError,
    PyroGenError,
    ShapeError,
)
from pyro_gen.evaluate import diagnose, evaluate_elbo, log_likelihood
from pyro_gen.infer import BetaSchedule, TrainConfig, Trainer
from pyro_gen.models import (
    VAE,
    as_pair,
    build_model,
    check_pair,
    load_model,
    load_weights,
    save_model,
)


@dataclass
class Case:
    name: str
    run: Callable[[Path], object]
    error: type[Exception]
    match: str


def small_vae(**kw) -> VAE:
    torch.manual_seed(0)
    return VAE(**{"data_shape": (1, 8, 8), "latent_dim": 2, "hidden": (16,), **kw})


def binary(n: int = 64, shape=(1, 8, 8)) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, *shape), 0.3), generator=torch.Generator().manual_seed(0))


def fit(x, valid=None, model=None, tmp: Path | None = None, **kw):
    kw = {"batch_size": 16, "max_steps": 2, "progress": False, **kw}
    run_dir = tmp / "run" if tmp is not None else None
    return Trainer(model or small_vae(), run_dir=run_dir, **kw).fit(x, valid)


def with_nan(x: torch.Tensor, value=float("nan")) -> torch.Tensor:
    x = x.clone()
    x[3, 0, 2, 2] = value
    return x


def saved_run(tmp: Path) -> Path:
    run = tmp / "saved"
    save_model(small_vae(), run)
    return run


def edit_config(tmp: Path, edit: Callable[[dict], None]) -> Path:
    run = saved_run(tmp)
    cfg = json.loads((run / "config.json").read_text())
    edit(cfg)
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def replace_weights(tmp: Path, write: Callable[[Path], None]) -> Path:
    run = saved_run(tmp)
    write(run / "model.safetensors")
    return run


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-9])


def write_pickle(path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump({"w": [1, 2, 3]}, f)


def write_torch_save(path: Path) -> None:
    torch.save({"w": torch.ones(2)}, path)
    assert zipfile.is_zipfile(path)


def write_foreign_safetensors(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(path))


def no_plate_model(x):
    z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(2))
    pyro.sample(
        "x",
        dist.Bernoulli(logits=z.sum(-1)).expand([len(x), 64]).to_event(2),
        obs=x.reshape(len(x), -1),
    )


def no_plate_guide(x):
    pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(2))


def no_event_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        pyro.sample(
            "x",
            dist.Bernoulli(logits=z.sum(-1, keepdim=True).expand(len(x), 64)),
            obs=x.reshape(len(x), -1),
        )


def no_event_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))


def flat_logits_model(x):
    """The reported fault: logits [N, 8, 8] for images [N, 1, 8, 8] with .to_event(3)."""
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        logits = z.sum(-1).reshape(-1, 1, 1).expand(len(x), 8, 8)
        pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)


def scaled_model(x, scale=0.0):
    with pyro.plate("data", len(x)):
        with poutine.scale(scale=scale):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
        logits = z.sum(-1).reshape(-1, 1, 1, 1).expand(x.shape)
        pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)


def evaluate_custom(evaluator, model, guide, x, **kw):
    """An evaluator on a custom pair (its module owns no parameters the pair uses)."""
    return evaluator(model, x, guide=guide, module=torch.nn.Linear(1, 1), **kw)


def fit_one_step(model, guide):
    """One training step of a custom pair (its module owns no parameters the pair uses)."""
    trainer = Trainer(
        model, guide, module=torch.nn.Linear(1, 1), batch_size=16, max_steps=1, progress=False
    )
    return trainer.fit(binary())


API_CASES = [
    # shapes and dtypes
    Case(
        "model: flat x for image model",
        lambda t: small_vae().model(binary().reshape(64, -1)),
        ShapeError,
        r"reshape\(-1, 1, 8, 8\)",
    ),
    Case(
        "encode: one datapoint, no batch axis",
        lambda t: small_vae().encode(binary()[0]),
        ShapeError,
        "unsqueeze",
    ),
    Case(
        "decode: wrong latent size",
        lambda t: small_vae().decode(torch.zeros(3, 5)),
        ShapeError,
        "latent size 2",
    ),
    Case(
        "fit: wrong data shape", lambda t: fit(binary(shape=(1, 9, 9))), ShapeError, r"\[1, 8, 8\]"
    ),
    Case("fit: numpy array", lambda t: fit(binary().numpy()), DataError, "torch.Tensor"),
    Case("fit: list", lambda t: fit(binary().tolist()), DataError, "torch.Tensor"),
    Case(
        "fit: Dataset object",
        lambda t: fit(load_dataset("shapes", num_train=32, num_valid=0, num_test=0, size=16)),
        DataError,
        "split",
    ),
    # values
    Case("fit: NaN", lambda t: fit(with_nan(binary())), DataError, "non-finite"),
    Case("fit: Inf", lambda t: fit(with_nan(binary(), float("inf"))), DataError, "non-finite"),
    Case(
        "fit: NaN in validation",
        lambda t: fit(binary(), with_nan(binary())),
        DataError,
        "non-finite",
    ),
    Case("fit: grey data, Bernoulli", lambda t: fit(binary() * 0.5), DataError, "binary data"),
    Case("fit: values 0/255, Bernoulli", lambda t: fit(binary() * 255), DataError, "Binarize"),
    Case("fit: empty data", lambda t: fit(binary()[:0]), DataError, "empty"),
    Case(
        "evaluate_elbo: grey data, Bernoulli",
        lambda t: evaluate_elbo(small_vae(), binary() * 0.3),
        DataError,
        "binary",
    ),
    Case(
        "Dataset: labels out of range",
        lambda t: Dataset(
            "d",
            {"train": binary(4)},
            (1, 8, 8),
            labels={"train": torch.tensor([0, 1, 2, 5])},
            label_names=("a", "b", "c"),
        ),
        DataError,
        "labels must be 0..2",
    ),
    Case(
        "Dataset: negative label",
        lambda t: Dataset(
            "d",
            {"train": binary(2)},
            (1, 8, 8),
            labels={"train": torch.tensor([0, -1])},
            label_names=("a", "b"),
        ),
        DataError,
        "labels must be",
    ),
    Case(
        "Dataset: label rows mismatch",
        lambda t: Dataset(
            "d", {"train": binary(4)}, (1, 8, 8), labels={"train": torch.tensor([0, 1])}
        ),
        DataError,
        "2 rows",
    ),
    Case(
        "Dataset: unknown attribute",
        lambda t: load_dataset("shapes", num_train=4, num_valid=0, num_test=0, size=16).attribute(
            "train", "colour"
        ),
        DataError,
        "no attribute 'colour'",
    ),
    Case(
        "Dataset: unknown split",
        lambda t: load_dataset("shapes", num_train=4, num_valid=0, num_test=0, size=16).split(
            "tset"
        ),
        DataError,
        "Did you mean 'test'|has no split",
    ),
    # names
    Case("unknown model name", lambda t: build_model("vea"), ConfigError, "Did you mean 'vae'"),
    Case(
        "unknown likelihood",
        lambda t: small_vae(likelihood="bernouli"),
        ConfigError,
        "Did you mean 'bernoulli'",
    ),
    Case("unknown network", lambda t: small_vae(network="cnn"), ConfigError, "unknown network"),
    Case("unknown data set", lambda t: load_dataset("mnsit"), DataError, "Did you mean 'mnist'"),
    Case(
        "unknown data option", lambda t: load_dataset("shapes", num_trian=4), DataError, "num_train"
    ),
    Case("unknown ELBO", lambda t: TrainConfig(elbo="trace_elbo"), ConfigError, "unknown elbo"),
    Case(
        "unknown optimizer",
        lambda t: TrainConfig(optimizer="adamm"),
        ConfigError,
        "Did you mean 'adam'",
    ),
    Case(
        "unknown beta schedule",
        lambda t: BetaSchedule("linaer"),
        ConfigError,
        "Did you mean 'linear'",
    ),
    Case("unknown device", lambda t: fit(binary(), device="gpu0"), ConfigError, "unknown device"),
    # numbers
    Case("negative beta (model)", lambda t: small_vae(beta=-1.0), ConfigError, "beta must be >= 0"),
    Case(
        "negative beta (set later)",
        lambda t: setattr(small_vae(), "beta", -0.5),
        ConfigError,
        "beta must be >= 0",
    ),
    Case(
        "negative beta (schedule)",
        lambda t: BetaSchedule("linear", beta=-2.0, warmup_steps=3),
        ConfigError,
        "beta must be >= 0",
    ),
    Case("latent_dim 0", lambda t: small_vae(latent_dim=0), ConfigError, "latent_dim must be >= 1"),
    Case(
        "Gaussian scale 0",
        lambda t: small_vae(likelihood="gaussian", scale=0.0),
        ConfigError,
        "scale must be > 0",
    ),
    Case(
        "batch size larger than data",
        lambda t: fit(binary(10)),
        ConfigError,
        "larger than the training data",
    ),
    Case(
        "batch size 0",
        lambda t: fit(binary(), batch_size=0),
        ConfigError,
        "batch_size must be >= 1",
    ),
    Case(
        "negative learning rate", lambda t: fit(binary(), lr=-1e-3), ConfigError, "lr must be > 0"
    ),
    Case(
        "zero particles",
        lambda t: fit(binary(), num_particles=0),
        ConfigError,
        "num_particles must be >= 1",
    ),
    Case("negative clip norm", lambda t: fit(binary(), clip_norm=-1.0), ConfigError, "clip_norm"),
    Case("sample n < 1", lambda t: small_vae().sample(0), ConfigError, ">= 1"),
    # configuration
    Case(
        "TrainConfig: unknown key",
        lambda t: TrainConfig.from_dict({"epoch": 3}),
        ConfigError,
        "Did you mean 'epochs'",
    ),
    Case(
        "TrainConfig: mistyped value",
        lambda t: TrainConfig.from_dict({"epochs": "3"}),
        ConfigError,
        "should be int",
    ),
    Case(
        "Trainer: unknown keyword",
        lambda t: Trainer(small_vae(), batchsize=3),
        ConfigError,
        "Did you mean 'batch_size'",
    ),
    Case(
        "build_model: unknown key",
        lambda t: build_model("vae", {"latnet_dim": 3}),
        ConfigError,
        "Did you mean 'latent_dim'",
    ),
    Case(
        "build_model: mistyped value",
        lambda t: build_model("vae", {"latent_dim": "3"}),
        ConfigError,
        "should be a int",
    ),
    Case(
        "config.json: unknown model arg",
        lambda t: load_model(edit_config(t, lambda c: c["model"]["args"].update(hiden=[3]))),
        ConfigError,
        "Did you mean 'hidden'",
    ),
    Case(
        "config.json: mistyped model arg",
        lambda t: load_model(edit_config(t, lambda c: c["model"]["args"].update(beta="1"))),
        ConfigError,
        "should be a float",
    ),
    Case(
        "config.json: unknown model name",
        lambda t: load_model(edit_config(t, lambda c: c["model"].update(name="vqvae2"))),
        ConfigError,
        "unknown model",
    ),
    Case(
        "config.json: foreign format",
        lambda t: load_model(edit_config(t, lambda c: c.pop("format"))),
        CheckpointError,
        "not a pyro_gen config",
    ),
    Case(
        "config.json: corrupt JSON",
        lambda t: load_model(
            replace_weights(t, lambda p: (p.parent / "config.json").write_text("{nope"))
        ),
        CheckpointError,
        "not valid JSON",
    ),
    Case("config.json: missing", lambda t: load_model(t), CheckpointError, "does not exist"),
    Case(
        "run folder is a file",
        lambda t: load_model(replace_weights(t, lambda p: None) / "history.csv"),
        CheckpointError,
        "is not a folder|does not exist",
    ),
    # checkpoints
    Case(
        "weights: truncated",
        lambda t: load_model(replace_weights(t, truncate)),
        CheckpointError,
        "truncated or corrupt",
    ),
    Case(
        "weights: pickle file",
        lambda t: load_model(replace_weights(t, write_pickle)),
        CheckpointError,
        "never unpickles",
    ),
    Case(
        "weights: torch.save file",
        lambda t: load_model(replace_weights(t, write_torch_save)),
        CheckpointError,
        "torch.save",
    ),
    Case(
        "weights: foreign safetensors",
        lambda t: load_model(replace_weights(t, write_foreign_safetensors)),
        CheckpointError,
        "not one written by pyro_gen",
    ),
    Case(
        "weights: missing",
        lambda t: load_model(replace_weights(t, lambda p: p.unlink())),
        CheckpointError,
        "does not exist",
    ),
    Case(
        "weights: another architecture",
        lambda t: load_weights(small_vae(hidden=(32,)), saved_run(t)),
        CheckpointError,
        "architectures differ|does not fit",
    ),
    Case(
        "weights: another model",
        lambda t: load_weights(small_vae(network="conv"), saved_run(t)),
        CheckpointError,
        "another model",
    ),
    Case(
        "resume: nothing to resume",
        lambda t: fit(binary(), tmp=t, resume=True),
        CheckpointError,
        "nothing to resume",
    ),
    Case("resume: no run_dir", lambda t: Trainer(small_vae(), resume=True), ConfigError, "run_dir"),
    # data files
    Case(
        "binarized MNIST: empty folder",
        lambda t: load_binarized_mnist(t),
        DataNotFoundError,
        "binarized_mnist.npz",
    ),
    Case(
        "binarized MNIST: not an npz",
        lambda t: load_binarized_mnist(
            replace_weights(t, lambda p: (p.parent / "binarized_mnist.npz").write_text("x")).parent
            / "saved"
        ),
        DataError,
        "npz",
    ),
    Case("MNIST IDX: empty folder", lambda t: load_mnist(t), DataNotFoundError, "idx3-ubyte"),
    # model/guide pairs of one's own
    Case(
        "custom pair: no module",
        lambda t: Trainer(no_event_model, no_event_guide),
        ConfigError,
        "module=",
    ),
    Case(
        "custom pair: no data plate",
        lambda t: fit_one_step(no_plate_model, no_plate_guide),
        ShapeError,
        "plate",
    ),
    Case(
        "custom pair: no to_event",
        lambda t: fit_one_step(no_event_model, no_event_guide),
        ShapeError,
        "to_event",
    ),
    Case(
        "custom pair: observation broadcasts (logits [N, 8, 8], data [N, 1, 8, 8])",
        lambda t: fit_one_step(flat_logits_model, no_event_guide),
        ShapeError,
        r"observed site 'x'.*\[8, 1, 8, 8\].*\[8, 8, 8, 8\]",
    ),
    Case(
        "log_likelihood: custom pair, no to_event",
        lambda t: evaluate_custom(log_likelihood, no_event_model, no_event_guide, binary()),
        ShapeError,
        r"(?s)at site 'x'.*to_event",
    ),
    Case(
        "evaluate_elbo: observation broadcasts (logits [N, 8, 8], data [N, 1, 8, 8])",
        lambda t: evaluate_custom(evaluate_elbo, flat_logits_model, no_event_guide, binary()),
        ShapeError,
        r"observed site 'x'.*\[8, 1, 8, 8\].*\[8, 8, 8, 8\]",
    ),
    Case(
        "diagnose: custom pair, grey data for a Bernoulli",
        lambda t: evaluate_custom(
            diagnose, lambda x: scaled_model(x, 1.0), no_event_guide, binary() * 0.5
        ),
        DataError,
        r"site 'x' are outside the support Boolean\(\)",
    ),
    Case(
        "evaluate_elbo: custom pair, poutine.scale(0)",
        lambda t: evaluate_custom(evaluate_elbo, scaled_model, no_event_guide, binary()),
        ConfigError,
        r"scale that is not > 0.*poutine.mask",
    ),
    Case(
        "check_pair: float64 data, float32 module",
        lambda t: check_pair(as_pair(small_vae()), binary().double()),
        DataError,
        r"float64.*float32",
    ),
    Case(
        "evaluate_elbo: numpy array",
        lambda t: evaluate_elbo(small_vae(), binary().numpy()),
        DataError,
        "torch.Tensor; got ndarray",
    ),
    Case(
        "log_likelihood: NaN, custom pair",
        lambda t: evaluate_custom(
            log_likelihood, lambda x: scaled_model(x, 1.0), no_event_guide, with_nan(binary())
        ),
        DataError,
        r"non-finite .* index \[3, 0, 2, 2\]",
    ),
    Case("diagnose: empty data", lambda t: diagnose(small_vae(), binary()[:0]), DataError, "empty"),
]


def _snapshot(tmp: Path) -> set[str]:
    return {str(p.relative_to(tmp)) for p in tmp.rglob("*")}


@pytest.mark.parametrize("case", API_CASES, ids=[c.name for c in API_CASES])
def test_api_case(case: Case, tmp_path: Path):
    with pytest.raises(case.error, match=case.match) as info:
        case.run(tmp_path)
    assert isinstance(info.value, PyroGenError), f"{type(info.value)} is not a pyro_gen error"
    leftovers = [
        p for p in _snapshot(tmp_path) if Path(p).name.endswith(".tmp") or p.startswith("run")
    ]
    assert not leftovers, f"side effects: {leftovers}"


def test_failed_fit_leaves_parameters_untouched():
    vae = small_vae()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    with pytest.raises(DataError):
        fit(with_nan(binary()), model=vae)
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())


# -- the CLI -------------------------------------------------------------------------------------
TINY = [
    "--num-train",
    "64",
    "--num-valid",
    "16",
    "--num-test",
    "16",
    "--image-size",
    "16",
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--hidden",
    "16",
    "--latent-dim",
    "2",
    "--no-progress",
]


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


CLI_CASES = [
    (
        "unknown config key",
        lambda t: ["train", "--config", str(write(t, "c.json", '{"latnet_dim": 3}'))],
        "Did you mean 'latent_dim'",
    ),
    (
        "config file missing",
        lambda t: ["train", "--config", str(t / "nope.json")],
        "does not exist",
    ),
    (
        "config file not JSON",
        lambda t: ["train", "--config", str(write(t, "c.json", "{"))],
        "not valid JSON",
    ),
    (
        "config key for another verb",
        lambda t: ["train", "--config", str(write(t, "c.json", '{"resume": true}'))],
        "unknown setting",
    ),
    (
        "mistyped config value",
        lambda t: [
            "train",
            *TINY,
            "--out",
            str(t / "run"),
            "--config",
            str(write(t, "c.json", '{"lr": "fast"}')),
        ],
        "should be float",
    ),
    (
        "unknown model",
        lambda t: ["train", *TINY, "--model", "vea", "--out", str(t / "run")],
        "Did you mean 'vae'",
    ),
    (
        "negative beta",
        lambda t: ["train", *TINY, "--beta", "-1", "--out", str(t / "run")],
        "beta must be >= 0",
    ),
    (
        "batch larger than data",
        lambda t: ["train", *TINY, "--batch-size", "1000", "--out", str(t / "run")],
        "larger than the training data",
    ),
    (
        "data dir without files",
        lambda t: [
            "train",
            "--data",
            "binarized_mnist",
            "--data-dir",
            str(t),
            "--out",
            str(t / "run"),
        ],
        "binarized_mnist.npz",
    ),
    (
        "shapes option on MNIST",
        lambda t: [
            "train",
            "--data",
            "binarized_mnist",
            "--num-train",
            "5",
            "--out",
            str(t / "run"),
        ],
        "applies to other data sets",
    ),
    (
        "model arg unknown",
        lambda t: ["train", *TINY, "--model-arg", "depth=3", "--out", str(t / "run")],
        "no argument 'depth'",
    ),
    ("resume without --out", lambda t: ["train", "--resume"], "--resume needs --out"),
    ("resume an empty folder", lambda t: ["train", "--resume", "--out", str(t)], "config"),
    ("sample: not a run folder", lambda t: ["sample", str(t)], "does not exist"),
    ("sample: n = 0", lambda t: ["sample", str(saved_run(t)), "--num", "0"], ">= 1"),
    ("evaluate: not a run folder", lambda t: ["evaluate", str(t / "nope")], "not a folder"),
    (
        "reconstruct: pickle weights",
        lambda t: ["reconstruct", str(replace_weights(t, write_pickle))],
        "never unpickles",
    ),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_case(case, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default run folder would land here: none may appear
    name, argv, match = case
    code = cli.main(argv(tmp_path))
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}; stderr: {err}"
    assert "error:" in err
    assert re.search(match, err), err
    assert not (tmp_path / "run").exists(), "a failed command left a run folder"
    assert not (tmp_path / "runs").exists(), "a failed command left a run folder"
