"""The judge: learns categorical, binary and continuous targets of a small synthetic problem,
reports accuracy/MAE, leaves the global random state alone, round-trips through disk, and
refuses bad targets with errors that say what is wrong."""

from __future__ import annotations

import pytest
import torch

from pyro_gen.data import make_shapes
from pyro_gen.errors import CheckpointError, ConfigError, DataError, ShapeError
from pyro_gen.evaluate.judge import load_judge, train_judge


def toy(n=400, seed=0):
    """Flat data whose targets are simple functions of the coordinates."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    cls = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # 3 classes
    binary = (x[:, 2] > 0).long()
    value = 2.0 * x[:, 3] + 5.0  # continuous, not standardised
    return x, {"cls": cls, "flag": binary, "value": value}


def test_learns_each_kind_and_scores_them():
    x, t = toy()
    judge = train_judge(x, t, {"flag": "binary"}, epochs=40, batch_size=50, hidden=32)
    assert judge.kinds == {"cls": "categorical", "flag": "binary", "value": "continuous"}
    xt, tt = toy(seed=1)
    score = judge.score(xt, tt)
    assert set(score) == {"cls_accuracy", "flag_accuracy", "value_mae"}
    assert score["cls_accuracy"] > 0.85 and score["flag_accuracy"] > 0.9
    # the MAE is in the target's units: far below its spread (std 2, MAE of a constant ≈ 1.6)
    assert score["value_mae"] < 0.5
    # a bare target name still reads its number (older callers)
    assert score["cls"] == score["cls_accuracy"] and score["value"] == score["value_mae"]
    with pytest.raises(KeyError):
        score["flag_mae"]
    pred = judge.predict(xt)
    assert pred["cls"].dtype == torch.int64 and pred["value"].dtype == torch.float32
    # score is the accuracy / MAE of predict, computed by hand
    assert score["cls"] == pytest.approx(float((pred["cls"] == tt["cls"]).float().mean()))
    assert score["value"] == pytest.approx(float((pred["value"] - tt["value"]).abs().mean()))
    probs = judge.probabilities(xt)
    torch.testing.assert_close(probs["cls"].sum(-1), torch.ones(len(xt)))
    assert judge.features(xt).shape == (len(xt), 32)
    assert judge.metric("value") == "mae" and judge.metric("flag") == "accuracy"


def test_seeded_and_leaves_global_rng_alone(tmp_path):
    x, t = toy(100)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = train_judge(x, {"cls": t["cls"]}, epochs=2, batch_size=20, hidden=8, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    b = train_judge(x, {"cls": t["cls"]}, epochs=2, batch_size=20, hidden=8, seed=3)
    torch.testing.assert_close(a.features(x), b.features(x), rtol=0, atol=0)
    a.save(tmp_path / "judge")
    c = load_judge(tmp_path / "judge")
    assert c.kinds == a.kinds and c.heads == a.heads
    torch.testing.assert_close(c.features(x), a.features(x), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="judge.json"):
        load_judge(tmp_path)


def test_conv_judge_reads_the_shape_class_of_images():
    ds = make_shapes(num_train=600, num_valid=0, num_test=300, size=16, seed=0)
    judge = train_judge(
        ds.split("train"),
        {"shape": ds.labels["train"]},
        epochs=6,
        batch_size=32,
        channels=(8, 16),
        hidden=32,
    )
    assert judge.network.network == "conv"
    acc = judge.score(ds.split("test"), {"shape": ds.labels["test"]})["shape"]
    assert acc > 0.6  # three classes: chance is 1/3


def test_bad_targets_and_settings():
    x, t = toy(20)
    with pytest.raises(ShapeError, match=r"\[20\]"):
        train_judge(x, {"cls": t["cls"][:10]})
    with pytest.raises(DataError, match="only 0 and 1"):
        train_judge(x, {"cls": t["cls"]}, {"cls": "binary"})
    with pytest.raises(ConfigError, match="categorical"):
        train_judge(x, {"cls": t["cls"]}, {"cls": "categoricl"})
    with pytest.raises(DataError, match="< 2"):
        train_judge(x, {"cls": t["cls"]}, num_classes={"cls": 2})
    with pytest.raises(DataError, match="NaN"):
        train_judge(x, {"v": torch.full((20,), float("nan"))})
    with pytest.raises(ConfigError, match="not targets"):
        train_judge(x, {"cls": t["cls"]}, {"other": "binary"})
    judge = train_judge(x, {"cls": t["cls"]}, epochs=1, batch_size=10, hidden=4)
    with pytest.raises(ConfigError, match=r"\['cls'\]"):
        judge.score(x, {"clss": t["cls"]})
    with pytest.raises(ShapeError, match=r"\[N, 5\]"):
        judge.predict(torch.zeros(3, 4))


def test_float_class_indices_are_refused_without_a_kind():
    x, t = toy()
    as_float = t["cls"].float()
    with pytest.raises(ConfigError, match=r"kinds=\{'cls': 'categorical'\}"):
        train_judge(x, {"cls": as_float}, epochs=1)
    with pytest.raises(ConfigError, match=r"kinds=\{'flag': 'binary'\}"):
        train_judge(x, {"flag": t["flag"].float()}, epochs=1)
    judge = train_judge(x, {"cls": as_float}, {"cls": "categorical"}, epochs=1, hidden=4)
    assert judge.kinds == {"cls": "categorical"}
    assert set(judge.score(x, {"cls": as_float})) == {"cls_accuracy"}
    # whole numbers with many distinct values stay a regression target
    many = torch.arange(len(x), dtype=torch.float32)
    assert train_judge(x, {"n": many}, epochs=1, hidden=4).kinds == {"n": "continuous"}
