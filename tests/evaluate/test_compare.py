"""Model comparison: ordering, paired differences and their standard error, tables."""

from __future__ import annotations

import csv
import io

import pytest
import torch

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate import compare, diagnose
from tests.evaluate.conftest import make_linear_gaussian, sample_x


@pytest.fixture
def two_models():
    good = make_linear_gaussian(guide="exact")
    bad = make_linear_gaussian(guide="exact")
    bad.W = bad.W * 1.3
    x = sample_x(good, 200)
    return good, bad, x


def test_ordering_and_paired_difference_are_exact_with_exact_guides(two_models):
    good, bad, x = two_models
    diff = good.exact_log_px(x) - bad.exact_log_px(x)
    assert diff.mean() > 0
    for order in (["bad", "good"], ["good", "bad"]):
        models = {"good": good, "bad": bad}
        c = compare({k: models[k] for k in order}, x, num_samples=1)
        assert c.names == ["good", "bad"]
        best, other = c.rows
        assert best["rank"] == 0 and best["d_log_px"] == 0.0 and best["d_log_px_se"] == 0.0
        assert other["d_log_px"] == pytest.approx(float(diff.mean()), abs=1e-8)
        assert other["d_log_px_se"] == pytest.approx(float(diff.std() / 200**0.5), abs=1e-8)
        assert best["test_nll"] == pytest.approx(-float(good.exact_log_px(x).mean()), abs=1e-8)
        # pairing: the difference is far better determined than either NLL
        assert other["d_log_px_se"] < best["nll_se"]


def test_tables_are_written_as_markdown_and_csv(two_models, tmp_path):
    good, bad, x = two_models
    c = compare([bad, good], x[:50], num_samples=30)
    assert c.names == ["LinearGaussian-1", "LinearGaussian-0"]
    md, path_csv = c.write(tmp_path)
    text = md.read_text()
    assert text.startswith("| rank | model | test NLL |") and "LinearGaussian-1" in text
    rows = list(csv.DictReader(io.StringIO(path_csv.read_text())))
    assert [r["model"] for r in rows] == c.names
    assert float(rows[1]["d_log_px"]) == pytest.approx(c.rows[1]["d_log_px"])
    assert set(rows[0]) >= {"test_nll", "elbo", "gap", "active_units", "khat_share"}


def test_precomputed_diagnostics_must_cover_x(two_models):
    good, bad, x = two_models
    d = diagnose(good, x[:10], num_samples=1)
    with pytest.raises(ConfigError, match="10 datapoints, not the 20"):
        compare({"good": d, "bad": bad}, x[:20], num_samples=1)
    c = compare({"good": d, "bad": bad}, x[:10], num_samples=1)
    torch.testing.assert_close(c.diagnostics["good"].log_px, d.log_px)
