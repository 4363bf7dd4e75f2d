"""The per-site building blocks of evaluate.terms that evaluate.ais shares: exact small cases."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_gen.evaluate.terms import (
    TraceSiteError,
    apply_mask,
    check_not_enumerated,
    data_plate_dim,
    repeat_rows,
    sum_to_front,
)


def _trace(fn):
    return poutine.trace(fn).get_trace()


def test_data_plate_dim_reads_the_plate_and_names_a_global_latent():
    def program():
        with pyro.plate("data", 3, dim=-2):
            with pyro.plate("pixels", 4, dim=-1):
                pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("g", dist.Normal(0.0, 1.0))

    tr = _trace(program)
    assert data_plate_dim("x", tr.nodes["x"], "model") == -2
    with pytest.raises(TraceSiteError, match="model site 'g' is not inside pyro.plate"):
        data_plate_dim("g", tr.nodes["g"], "model")


def test_apply_mask_zeroes_masked_entries_only():
    v = torch.tensor([1.0, -2.0, 3.0])
    assert apply_mask({"mask": None}, v) is v
    assert apply_mask({"mask": True}, v) is v
    assert torch.equal(apply_mask({"mask": False}, v), torch.zeros(3))
    mask = torch.tensor([True, False, True])
    assert torch.equal(apply_mask({"mask": mask}, v), torch.tensor([1.0, 0.0, 3.0]))


def test_sum_to_front_sums_all_but_the_lead_axes_and_broadcasts_them():
    v = torch.arange(24.0).reshape(2, 3, 4)  # [K, N, D]
    assert torch.equal(sum_to_front(v, [(-2, 3)]), v.sum((0, 2)))  # data axis first: [N]
    assert torch.equal(sum_to_front(v, [(-3, 2), (-2, 3)]), v.sum(2))  # [K, N]
    # a log-density with no data axis broadcasts over it: each datapoint gets the whole sum
    s = torch.tensor([1.5, 2.5])  # [D]
    assert torch.equal(sum_to_front(s, [(-2, 3)]), torch.full((3,), 4.0))


def test_check_not_enumerated_refuses_an_enumerated_site_by_name():
    check_not_enumerated("z", {"infer": {}}, "guide")
    with pytest.raises(TraceSiteError, match="guide site 'z' is enumerated"):
        check_not_enumerated("z", {"infer": {"enumerate": "parallel"}}, "guide")


def test_repeat_rows_repeats_tensors_with_n_rows_only():
    x = torch.tensor([[1.0], [2.0]])
    assert torch.equal(repeat_rows(x, 2, 3), torch.tensor([[1.0], [2.0]] * 3))
    other = torch.ones(5, 1)
    assert repeat_rows(other, 2, 3) is other  # not a per-datapoint tensor
    assert repeat_rows("label", 2, 3) == "label"
    scalar = torch.tensor(2.0)
    assert repeat_rows(scalar, 2, 3) is scalar
