"""MIG (Chen et al. 2018): 1 for an identity encoding of the factors, ≈ 0 for noise and for a
code that copies a factor twice, exact plug-in mutual information on small tables."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from pyro_gen.errors import ConfigError, DataError, ShapeError
from pyro_gen.latent.mig import (
    BIAS_TOLERANCE,
    MIGBiasWarning,
    discrete_mutual_info,
    discretize,
    model_mig,
    mutual_information_gap,
)
from pyro_gen.models import VAE


def factors(n: int = 5000, seed: int = 0) -> torch.Tensor:
    """Three independent factors: a 3-way category and two continuous uniforms."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randint(3, (n,), generator=g).float(),
            torch.rand(n, generator=g),
            torch.rand(n, generator=g),
        ],
        1,
    )


def test_identity_encoding_scores_one():
    v = factors()
    result = mutual_information_gap(v, v, factor_names=("shape", "a", "b"))
    assert result.score == pytest.approx(1.0, abs=0.01)
    assert result.top_dim.tolist() == [0, 1, 2]
    # the discrete factor keeps its 3 values; a continuous one has 20 equal-mass bins
    assert result.factor_entropy[0] == pytest.approx(math.log(3), abs=0.01)
    assert result.factor_entropy[1] == pytest.approx(math.log(20), abs=0.01)
    assert [r["factor"] for r in result.table()] == ["shape", "a", "b"]


def test_a_monotone_rescaled_code_with_extra_noise_dims_still_scores_near_one():
    v = factors()
    g = torch.Generator().manual_seed(1)
    codes = torch.cat(
        [3 * v[:, [2]] - 1, v[:, [0]] * 0.5, torch.randn(len(v), 4, generator=g), v[:, [1]]], 1
    )
    result = mutual_information_gap(codes, v, discrete=[True, False, False])
    assert result.score > 0.9
    assert result.top_dim.tolist() == [1, 6, 0]


def test_noise_scores_zero():
    v = factors()
    g = torch.Generator().manual_seed(2)
    result = mutual_information_gap(torch.randn(len(v), 6, generator=g), v)
    assert result.score < 0.02


def test_a_factor_copied_into_two_dimensions_has_no_gap():
    v = factors()
    codes = torch.cat([v[:, [1]], v[:, [1]], v[:, [0]]], 1)
    result = mutual_information_gap(codes, v[:, :2])
    assert result.gap[1] == pytest.approx(0.0, abs=1e-9)  # a tie: mutual info, no gap
    assert result.gap[0] == pytest.approx(1.0, abs=0.01)  # runner-up: plug-in bias only


def test_plug_in_mutual_information_on_a_small_table():
    # a = b on half the rows, independent on the other half: I = Σ p log p/(pa pb)
    a = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1])[:, None]
    b = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])[:, None]
    p = torch.tensor([[3, 1], [1, 3]], dtype=torch.float64) / 8.0
    expected = float((p * (p / 0.25).log()).sum())
    assert float(discrete_mutual_info(a, b)) == pytest.approx(expected, abs=1e-12)
    assert float(discrete_mutual_info(a, a)) == pytest.approx(math.log(2), abs=1e-12)


def test_discretize_is_equal_width_per_column():
    v = torch.tensor([[0.0, 5.0], [0.5, 5.0], [1.0, 5.0], [0.26, 5.0]])
    assert discretize(v, 4).tolist() == [[0, 0], [2, 0], [3, 0], [1, 0]]


def test_model_mig_reads_the_guide_means_and_restores_the_mode():
    torch.manual_seed(0)
    vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((200, 4), 0.5))
    with pytest.warns(MIGBiasWarning):  # 20 code bins x 2 values from 200 rows
        result = model_mig(vae, x, x[:, :2])
    assert 0.0 <= result.score <= 1.0 and result.mutual_info.shape == (2, 2)
    assert vae.training


def test_bad_inputs():
    v = factors(100)
    with pytest.raises(ShapeError, match="same N"):
        mutual_information_gap(v[:50], v)
    with pytest.raises(DataError, match="constant"):
        mutual_information_gap(v, torch.ones(100, 1))
    with pytest.raises(DataError, match="NaN"):
        mutual_information_gap(torch.full((100, 2), float("nan")), v)
    with pytest.raises(ConfigError, match="one flag per factor"):
        mutual_information_gap(v, v, discrete=[True])
    with pytest.raises(ConfigError, match="num_bins"):
        mutual_information_gap(v, v, num_bins=1)


def test_small_samples_warn_of_the_plug_in_bias_and_large_ones_do_not():
    # independent noise: the true MI is 0; the plug-in estimate is ≈ (B_a − 1)(B_b − 1) / (2N)
    g = torch.Generator().manual_seed(3)
    n = 400
    codes, v = torch.rand(n, 1, generator=g), torch.rand(n, 1, generator=g)
    with pytest.warns(MIGBiasWarning, match=r"400 datapoints with 20 bins.*biased upward"):
        result = mutual_information_gap(codes, v)
    assert float(result.plug_in_bias[0, 0]) == pytest.approx(19 * 19 / (2 * n))
    # the bias is real: the estimate of a zero mutual information is near the first-order term
    assert float(result.mutual_info[0, 0]) == pytest.approx(19 * 19 / (2 * n), rel=0.35)
    assert issubclass(MIGBiasWarning, UserWarning)
    # 20 x 20 bins with 20,000 rows: bias 0.009 nats, 0.3% of log 20: no warning
    big = factors(20000, seed=4)[:, 1:]
    with warnings.catch_warnings():
        warnings.simplefilter("error", MIGBiasWarning)
        result = mutual_information_gap(big, big)
    assert float(result.plug_in_bias.max()) / math.log(20) < BIAS_TOLERANCE


def test_few_values_need_few_datapoints():
    # a binary code and a binary factor: bias 1 / (2N); 100 rows are plenty
    g = torch.Generator().manual_seed(5)
    v = torch.randint(2, (100, 1), generator=g).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error", MIGBiasWarning)
        result = mutual_information_gap(v, v)
    assert float(result.plug_in_bias[0, 0]) == pytest.approx(1 / 200)
