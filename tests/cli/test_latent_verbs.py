"""``pyro-gen train --model cvae``, ``generate``, ``edit``, ``interpolate`` and ``traverse`` end
to end on tiny runs: figures written with titles that say what was done, the summary updated,
bad attribute names and values refused with the valid ones listed."""

from __future__ import annotations

import json

import pytest

from pyro_gen.cli import main
from pyro_gen.cli.edit import number_value
from pyro_gen.cli.generate import display_values
from pyro_gen.models import CVAE, load_model

TINY = (
    "--num-train 256 --num-valid 0 --num-test 64 --image-size 16 --batch-size 64 --epochs 1 "
    "--no-progress --latent-dim 3 --hidden 16"
).split()


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cvae") / "run"
    assert main(["train", "--model", "cvae", "--out", str(run), *TINY]) == 0
    return run


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("vae") / "run"
    assert main(["train", "--model", "vae", "--out", str(run), *TINY]) == 0
    return run


def test_train_cvae_takes_its_attributes_from_the_data(cvae_run):
    model = load_model(cvae_run)
    assert isinstance(model, CVAE)
    assert model.attribute_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    summary = json.loads((cvae_run / "summary.json").read_text())
    assert summary["train"]["test_elbo"]["num_datapoints"] == 64
    assert (cvae_run / "figures" / "reconstructions.png").is_file()


@pytest.mark.slow
def test_train_cvae_with_chosen_attributes(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--model", "cvae", "--attributes", '["shape", "scale"]', "--out", str(run)]
    assert main([*args, *TINY]) == 0
    assert load_model(run).attribute_names == ("shape", "scale")


def test_generate(cvae_run, capsys):
    args = ["generate", str(cvae_run), "--attr", "shape=heart", "--attr", "scale=0.8"]
    assert main([*args, "--num", "8"]) == 0
    path = cvae_run / "figures" / "generate-shape-heart-scale-0.8-seed0.png"
    assert path.is_file()
    summary = json.loads((cvae_run / "summary.json").read_text())["generate"]
    assert summary["attributes"] == {"shape": "heart", "scale": "0.8"}
    capsys.readouterr()
    assert main(["generate", str(cvae_run), "--attr", "shap=heart"]) == 2
    err = capsys.readouterr().err
    assert "unknown attribute 'shap'" in err and "square, ellipse, heart" in err
    assert main(["generate", str(cvae_run), "--attr", "shape=star"]) == 2
    assert "valid: square, ellipse, heart" in capsys.readouterr().err
    assert main(["generate", str(cvae_run), "--attr", "scale=7"]) == 2
    assert "[0.5, 1]" in capsys.readouterr().err
    assert main(["generate", str(cvae_run), "--attr", "scale"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_generate_names_classes_not_indices(cvae_run):
    assert main(["generate", str(cvae_run), "--attr", "shape=2", "--num", "4"]) == 0
    assert (cvae_run / "figures" / "generate-shape-heart-seed0.png").is_file()
    model = load_model(cvae_run)
    shown = display_values(model, {"shape": "0", "scale": "0.8"})
    assert shown == {"shape": "square", "scale": "0.8"}


def test_generate_a_chosen_class_of_an_ssvae(tmp_path, capsys):
    """The SSVAE generates images of a chosen label, by name or index, through the same
    --attr NAME=VALUE path (and checks) as a CVAE."""
    run = tmp_path / "ssvae"
    args = [*TINY, "--classifier-hidden", "16", "--classifier-layers", "16", "--num-labels", "20"]
    assert main(["train", "--model", "ssvae", "--out", str(run), *args]) == 0
    for value in ("heart", "2"):
        assert main(["generate", str(run), "--attr", f"label={value}", "--num", "4"]) == 0
        assert (run / "figures" / "generate-label-heart-seed0.png").is_file()
    summary = json.loads((run / "summary.json").read_text())["generate"]
    assert summary["attributes"] == {"label": "2"} and summary["num"] == 4
    capsys.readouterr()
    assert main(["generate", str(run), "--attr", "label=star"]) == 2
    assert "valid: square, ellipse, heart" in capsys.readouterr().err
    assert main(["generate", str(run), "--attr", "label=3"]) == 2
    assert "indices 0..2" in capsys.readouterr().err
    assert main(["generate", str(run), "--attr", "shape=heart"]) == 2
    assert "unknown attribute 'shape'" in capsys.readouterr().err


def test_generate_needs_a_conditional_model(vae_run, capsys):
    assert main(["generate", str(vae_run), "--attr", "shape=heart"]) == 2
    err = capsys.readouterr().err
    assert "VAE is not a conditional model" in err and "pyro-gen sample" in err
    assert "as pyro_gen.models.VAE has" not in err


@pytest.mark.parametrize("which", ["vae", "cvae"])
def test_edit_interpolate_traverse(which, vae_run, cvae_run, capsys):
    run = vae_run if which == "vae" else cvae_run
    edit = ["edit", str(run), "--attribute", "shape", "--value", "heart", "--num", "3"]
    # the CVAE is told the shape: a conditional edit, which takes no --alpha
    assert main([*edit, *(["--alpha", "0,1,2"] if which == "vae" else [])]) == 0
    assert (run / "figures" / "edit-shape-heart.png").is_file()
    summary = json.loads((run / "summary.json").read_text())["edit"]
    if which == "vae":
        assert summary["alphas"] == [0, 1, 2]
    else:  # the CVAE's decoder is told the shape: the edit decodes z with shape=heart
        assert summary["method"] == "condition" and summary["attributes"] == {"shape": "heart"}
    assert main(["interpolate", str(run), "--pairs", "2", "--steps", "4"]) == 0
    assert (run / "figures" / "interpolate-slerp.png").is_file()
    assert main(["traverse", str(run), "--dims", "2", "--steps", "3", "--num-images", "32"]) == 0
    kl = json.loads((run / "summary.json").read_text())["traverse"]["kl_nats"]
    assert len(kl) == 2 and kl[0] >= kl[1]
    capsys.readouterr()
    assert main(["edit", str(run), "--attribute", "colour"]) == 2
    assert "it has: shape, scale" in capsys.readouterr().err
    assert main(["edit", str(run), "--attribute", "shape"]) == 2
    assert "--value" in capsys.readouterr().err


def test_edit_a_cvae_with_new_attributes(cvae_run, vae_run, capsys):
    args = ["edit", str(cvae_run), "--attr", "shape=0", "--attr", "scale=0.9", "--num", "4"]
    assert main(args) == 0
    assert (cvae_run / "figures" / "edit-shape-square-scale-0.9.png").is_file()
    summary = json.loads((cvae_run / "summary.json").read_text())["edit"]
    assert summary["attributes"] == {"shape": "0", "scale": "0.9"} and summary["num"] == 4
    capsys.readouterr()
    assert main(["edit", str(cvae_run), "--attr", "shap=heart"]) == 2
    assert "unknown attribute 'shap'" in capsys.readouterr().err
    assert main(["edit", str(cvae_run), "--attr", "scale=7"]) == 2
    assert "[0.5, 1]" in capsys.readouterr().err
    both = ["edit", str(cvae_run), "--attr", "shape=heart", "--attribute", "shape"]
    assert main(both) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["edit", str(vae_run), "--attr", "shape=heart"]) == 2
    assert "does not condition on attributes" in capsys.readouterr().err


def test_help_explains_each_verb(capsys):
    for verb in ("generate", "edit", "interpolate", "traverse"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        assert "Writes figures/" in " ".join(capsys.readouterr().out.split())


def test_evaluate_and_reconstruct_a_cvae_run_with_its_attributes(cvae_run, capsys):
    """Every verb reads the model's named batch: a CVAE is evaluated and reconstructed with
    the attributes of the same rows (they refused with 'attribute ... is not given')."""
    assert main(["evaluate", str(cvae_run), "--limit", "16", "--no-progress"]) == 0
    result = json.loads((cvae_run / "summary.json").read_text())["evaluate"]
    assert result["num_datapoints"] == 16
    # ELBO = E log p(x|z,y) + log p(y) of the observed attributes − KL (a bound on log p(x, y))
    parts = result["reconstruction"] + result["attributes_log_prob"] - result["kl"]
    assert result["elbo"] == pytest.approx(parts, abs=1e-3)
    assert main(["evaluate", str(cvae_run), "--limit", "8", "--num-samples", "24",
                 "--no-progress"]) == 0  # fmt: skip
    assert main(["reconstruct", str(cvae_run), "--num", "6"]) == 0
    capsys.readouterr()


def test_edit_value_is_checked_against_the_attributes_kind(vae_run, capsys):
    assert main(["edit", str(vae_run), "--attribute", "scale", "--value", "big"]) == 2
    assert "continuous attribute: --value must be a number" in capsys.readouterr().err
    assert main(["edit", str(vae_run), "--attribute", "is_heart", "--value", "2"]) == 2
    assert "binary attribute: --value must be 0 or 1" in capsys.readouterr().err
    args = ["edit", str(vae_run), "--attribute", "is_heart", "--value", "0", "--num", "2"]
    assert main([*args, "--alpha", "0,1"]) == 0
    assert json.loads((vae_run / "summary.json").read_text())["edit"]["value"] == "0"
    assert number_value("0.75", "continuous", "scale") == 0.75
    assert number_value(None, "binary", "is_heart") is None


def test_a_vector_edit_on_a_conditional_model_with_a_tiny_vector_says_where_to_edit(
    cvae_run, capsys, monkeypatch
):
    """On a CVAE, an attribute vector of near-zero length (z carries no such attribute: y does)
    gets a note that points to --attr; a vector of real length gets none."""
    import pyro_gen.cli.edit as edit

    real = edit.attribute_vector
    args = ["edit", str(cvae_run), "--attribute", "is_heart", "--num", "2"]
    monkeypatch.setattr(edit, "attribute_vector", lambda *a: 0.0 * real(*a))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "barely differ" in out and "--attr NAME=VALUE" in out and "shape" in out
    monkeypatch.setattr(edit, "attribute_vector", lambda *a: 0.0 * real(*a) + 1.0)
    assert main(args) == 0
    assert "barely differ" not in capsys.readouterr().out


def test_edit_refuses_alpha_on_a_conditional_edit(cvae_run, vae_run, capsys):
    """--alpha scales an attribute vector; a conditional edit (--attr, or --attribute on an
    attribute the CVAE's decoder is told) has none, so a given --alpha is refused instead of
    silently ignored, while leaving it out keeps working (and the vector edit's default)."""
    for edit in (["--attr", "shape=heart"], ["--attribute", "shape", "--value", "heart"]):
        args = ["edit", str(cvae_run), *edit, "--num", "2"]
        capsys.readouterr()
        assert main([*args, "--alpha", "0,1,2"]) == 2
        err = capsys.readouterr().err
        assert "--alpha scales an attribute vector" in err and "Leave --alpha out" in err
        assert main(args) == 0  # the default path: no --alpha
    args = ["edit", str(vae_run), "--attribute", "is_heart", "--num", "2"]
    assert main(args) == 0  # a vector edit without --alpha: the default factors
    summary = json.loads((vae_run / "summary.json").read_text())["edit"]
    assert summary["alphas"] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert main(["edit", str(vae_run), "--attribute", "is_heart", "--alpha", ","]) == 2


def test_every_image_verb_caps_its_figure_and_says_so(vae_run, cvae_run, capsys, monkeypatch):
    """A large --num (--pairs, --dims) draws at most MAX_FIGURE_ROWS rows of images, with a
    note in the title and on stdout, while the summary's numbers cover every image."""
    import pyro_gen.cli._latent as latent
    from pyro_gen import plots

    monkeypatch.setattr(latent, "MAX_FIGURE_ROWS", 2)  # small runs, same code path as 16
    drawn, titles = [], []
    real_grid, real_save = plots.image_grid, plots.save_figure

    def image_grid(x, ncols=8, title=None, image_shape=None):
        drawn.append((x.shape[0], ncols))
        return real_grid(x, ncols, title, image_shape)

    def save_figure(fig, path, dpi=110):
        titles.append(" ".join(fig.axes[0].get_title().split()))
        return real_save(fig, path, dpi)

    monkeypatch.setattr(plots, "image_grid", image_grid)
    monkeypatch.setattr(plots, "save_figure", save_figure)

    def summary(run, verb):
        return json.loads((run / "summary.json").read_text())[verb]

    cases = [  # (run, argv, verb, images per figure line, images per item shown)
        (vae_run, ["sample", "--num", "40"], "sample", 8, 1),
        (cvae_run, ["generate", "--attr", "shape=heart", "--num", "40"], "generate", 8, 1),
        (vae_run, ["reconstruct", "--num", "50"], "reconstruct", 10, 2),
        (
            vae_run,
            ["edit", "--attribute", "is_heart", "--num", "6", "--alpha", "0,1"],
            "edit",
            2,
            2,
        ),
        (cvae_run, ["edit", "--attr", "shape=heart", "--num", "6"], "edit", 3, 3),
        (vae_run, ["interpolate", "--pairs", "5", "--steps", "3"], "interpolate", 3, 3),
        (vae_run, ["traverse", "--steps", "3", "--num-images", "32"], "traverse", 3, 3),
    ]
    for run, argv, verb, ncols, per_item in cases:
        drawn.clear(), titles.clear(), capsys.readouterr()
        assert main([argv[0], str(run), *argv[1:]]) == 0, argv
        out = capsys.readouterr().out
        ((count, cols),) = drawn
        assert cols == ncols and count <= 2 * ncols, (argv, count, cols)  # two lines at most
        assert "the figure shows the first" in titles[0] and "the figure shows the first" in out
        s = summary(run, verb)
        total = s.get("num", s.get("pairs", len(s.get("dims", []))))
        assert count == s["shown"] * per_item and s["shown"] < total, (argv, s)
    assert summary(vae_run, "reconstruct")["num"] == 50  # the error covers all 50 images
    monkeypatch.setattr(latent, "MAX_FIGURE_ROWS", 16)
    drawn.clear(), capsys.readouterr()
    assert main(["sample", str(vae_run), "--num", "20"]) == 0  # fits: all drawn, no note
    assert drawn == [(20, 8)] and "the figure shows" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("prior", "standard"), [("vamp", False), ("mog", False), ("standard", True)]
)
def test_traverse_knows_when_the_prior_is_not_a_standard_normal(prior, standard):
    """traverse ranks and sweeps in N(0, 1) units: it says so for a learned prior."""
    from pyro_gen.cli.traverse import standard_normal_prior
    from pyro_gen.models import build_model

    cfg = {"data_shape": [4], "latent_dim": 2, "hidden": [8], "prior": prior}
    if prior != "standard":  # components of N(0, I) are refused
        cfg["num_components"] = 3
    assert standard_normal_prior(build_model("vamp_vae", cfg)) is standard
