"""Graph clean-ups of captured losses: fewer operations, the same bits, random draws untouched."""

from __future__ import annotations

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from pyro_gen.infer.graph_passes import flat_arguments, simplify


def ops(graph) -> list[str]:
    return [str(n.target) for n in graph.graph.nodes if n.op == "call_function"]


def capture(fn, *inputs):
    graph = make_fx(fn)(*inputs)
    return graph, simplify(graph, list(inputs))


def test_identities_constants_and_duplicates_go_and_values_stay():
    def fn(x, w):
        prior_loc = x.new_zeros(3)  # a standard Normal prior, rebuilt every call
        prior_scale = prior_loc + 1
        z = (x * w).expand(4, 3)
        log_p = -((z - prior_loc) ** 2) / (2 * prior_scale**2) - prior_scale.log()
        total = log_p.sum() + 0
        return (total / 1) + log_p.sum()

    x, w = torch.randn(4, 3), torch.randn(3)
    graph, removed = capture(fn, x, w)
    assert removed >= 8
    names = ops(graph)
    assert "aten.new_zeros.default" not in names and "aten.log.default" not in names
    assert names.count("aten.sum.default") == 1  # the same reduction, computed once
    assert torch.equal(graph(x, w), fn(x, w))


def test_broadcasting_by_a_constant_is_not_an_identity():
    def fn(x):
        return (x + x.new_zeros(2, 3)).sum(0)  # [3] + zeros[2, 3] is a [2, 3] tensor

    x = torch.randn(3)
    graph, _ = capture(fn, x)
    assert torch.equal(graph(x), fn(x))
    assert "aten.add.Tensor" in ops(graph)


def test_random_draws_are_neither_merged_nor_folded_nor_dropped():
    def fn(x):
        a = torch.randn(3)  # same call twice: two different draws
        b = torch.randn(3)
        torch.rand(2)  # unused, but it moves the generator
        noise = torch.empty(3).normal_()  # a buffer written in place is no constant
        return x * a + b + noise

    x = torch.randn(3)
    graph, _ = capture(fn, x)
    names = ops(graph)
    assert names.count("aten.randn.default") == 2 and "aten.rand.default" in names
    assert "aten.empty.memory_format" in names and "aten.normal_.default" in names
    torch.manual_seed(0)
    want = (fn(x), torch.rand(1))
    torch.manual_seed(0)
    got = (graph(x), torch.rand(1))
    assert all(torch.equal(a, b) for a, b in zip(want, got))


def test_flat_arguments_take_and_return_plain_tensors():
    graph = make_fx(lambda ts, x: ts[0] * x + ts[1])([torch.ones(2), torch.zeros(2)], torch.ones(2))
    flat_arguments(graph)
    out = graph(torch.full((2,), 2.0), torch.ones(2), torch.full((2,), 3.0))
    assert torch.equal(out, torch.full((2,), 7.0))
