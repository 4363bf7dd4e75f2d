"""Clean-ups of a captured ``torch.fx`` graph of ATen operations that keep its values bit for bit.

A Pyro loss captured by :class:`~pyro_gen.infer.capture.CapturedLoss` holds operations a
hand-written loss would not: the prior's constant parameters rebuilt each step
(``new_zeros(...) + 1``, their ``log`` and square), expansions to the shape a tensor already
has, ``x + 0`` and ``x / 1`` from sums that start at zero, the same reduction twice. Each costs a
few microseconds of dispatch forwards and backwards. :func:`simplify` removes them:

- **constant folding**: operations that depend on no input value (only on a batch's shape,
  dtype and device, which the capture's key fixes) are computed once;
- **identities**: ``expand``/``view`` to the same shape, ``+ 0``, ``- 0``, ``* 1``, ``/ 1`` (by
  a number or by a folded constant whose elements all are 0 or 1, e.g. a standard Normal
  prior's location and scale) and ``_to_copy`` to the same dtype, on floating tensors, become
  their input;
- **duplicates**: the same pure operation on the same arguments is computed once;
- **dead code**: unused pure operations go; random draws stay even when unused (dropping one
  would shift every later draw).

Every rewrite gives the same bits: ``x + 0 == x`` and ``x * 1 == x`` exactly in IEEE arithmetic
(the only change is ``-0.0 + 0 = +0.0``, which no later operation here can tell apart in a sum).
Operations that write in place, and the tensors they touch, are left alone.

>>> import torch
>>> from torch.fx.experimental.proxy_tensor import make_fx
>>> g = make_fx(lambda x: (x.expand(3) + 0) * x.new_ones(3).log1p())(torch.ones(3))
>>> n = simplify(g, [torch.ones(3)])
>>> n > 0, torch.equal(g(torch.ones(3)), torch.ones(3) * torch.tensor(2.0).log())
(True, True)
"""

from __future__ import annotations

import torch
from torch import fx

__all__ = ["simplify", "flat_arguments", "removable"]

aten = torch.ops.aten
# operations whose result depends on their first argument's metadata only, not its values
_METADATA_ONLY = {
    aten.new_zeros.default,
    aten.new_ones.default,
    aten.new_full.default,
    aten.zeros_like.default,
    aten.ones_like.default,
    aten.full_like.default,
}
_IDENTITY_SCALAR = {
    aten.add.Tensor: 0,
    aten.sub.Tensor: 0,
    aten.mul.Tensor: 1,
    aten.div.Tensor: 1,
}


def removable(node: fx.Node) -> bool:
    """A pure ATen operation that draws no random numbers (safe to drop, merge or fold)."""
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return False
    return not target._schema.is_mutable and torch.Tag.nondeterministic_seeded not in target.tags


def _val(node) -> torch.Tensor | None:
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    return value if isinstance(value, torch.Tensor) else None


def _mutated(node: fx.Node) -> bool:
    """An operation that writes in place uses the node's result."""
    return any(
        user.op == "call_function"
        and isinstance(user.target, torch._ops.OpOverload)
        and user.target._schema.is_mutable
        for user in node.users
    )


def _touches_mutation(node: fx.Node) -> bool:
    """The node, or its first input, is written in place by a later operation."""
    return _mutated(node) or any(_mutated(a) for a in node.args[:1] if isinstance(a, fx.Node))


def _is_constant(graph: fx.GraphModule, arg, value) -> bool:
    """``arg`` is the number ``value``, or a stored constant tensor whose elements all are."""
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return arg == value
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        tensor = getattr(graph, arg.target, None)
        return isinstance(tensor, torch.Tensor) and bool((tensor == value).all())
    return False


def _identity_input(graph: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """The input a node merely passes on, or None."""
    if node.op != "call_function" or not node.args or not isinstance(node.args[0], fx.Node):
        return None
    source = node.args[0]
    out, inp = _val(node), _val(source)
    if out is None or inp is None or out.dtype != inp.dtype or not out.is_floating_point():
        return None
    if out.shape != inp.shape or out.stride() != inp.stride() or _touches_mutation(node):
        return None
    target = node.target
    if target in (aten.expand.default, aten.view.default, aten.reshape.default):
        return source
    if target == aten._to_copy.default and set(node.kwargs) <= {"dtype"}:
        return source
    if target in _IDENTITY_SCALAR and len(node.args) == 2 and not node.kwargs:
        if _is_constant(graph, node.args[1], _IDENTITY_SCALAR[target]):
            return source  # the shape check above: the constant does not broadcast it
    return None


def _drop_identities(graph: fx.GraphModule) -> int:
    dropped = 0
    for node in list(graph.graph.nodes):
        source = _identity_input(graph, node)
        if source is not None and not any(u.op == "output" for u in node.users):
            node.replace_all_uses_with(source)
            dropped += 1
    return dropped


def _fold_constants(graph: fx.GraphModule, inputs: list[torch.Tensor]) -> int:
    """Compute once what depends on no input's values; returns the operations folded."""
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    real = dict(zip(placeholders, inputs))
    constant: dict[fx.Node, object] = {}
    for node in graph.graph.nodes:
        # an uninitialised buffer, or one written in place, is not a constant
        if not removable(node) or "empty" in node.target.__name__ or _mutated(node):
            continue
        args = list(node.args)
        if node.target in _METADATA_ONLY and args and args[0] in real:
            args[0] = real[args[0]]  # only its shape, dtype and device are read
        nodes_in = []
        fx.node.map_arg((tuple(args), node.kwargs), nodes_in.append)
        if any(n not in constant for n in nodes_in):
            continue
        a, kw = fx.node.map_arg((tuple(args), node.kwargs), lambda n: constant[n])
        constant[node] = node.target(*a, **kw)
    folded = 0
    for node, value in constant.items():
        if not isinstance(value, torch.Tensor) or all(u in constant for u in node.users):
            continue
        name = f"_folded_{node.name}"
        graph.register_buffer(name, value, persistent=False)
        with graph.graph.inserting_before(node):
            attr = graph.graph.get_attr(name)
        attr.meta = dict(node.meta)
        node.replace_all_uses_with(attr)
        folded += 1
    return folded


def _merge_duplicates(graph: fx.GraphModule) -> int:
    seen: dict[tuple, fx.Node] = {}
    merged = 0
    for node in list(graph.graph.nodes):
        if not removable(node):
            continue
        try:
            signature = (node.target, _hashable(node.args), _hashable(node.kwargs))
            hash(signature)
        except TypeError:
            continue
        if signature in seen:
            node.replace_all_uses_with(seen[signature])
            merged += 1
        else:
            seen[signature] = node
    return merged


def _hashable(value):
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *map(_hashable, value))
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, float):
        return ("float", value, str(value))  # 0.0 and -0.0 differ
    return value


def _prune(graph: fx.GraphModule) -> int:
    dropped = 0
    for node in reversed(list(graph.graph.nodes)):  # users before the nodes they use
        if not node.users and (removable(node) or node.op == "get_attr"):
            graph.graph.erase_node(node)
            dropped += 1
    return dropped


def simplify(graph: fx.GraphModule, inputs: list[torch.Tensor]) -> int:
    """Fold, forward, merge and prune ``graph`` (captured from ``inputs``) in place; returns
    the number of operations removed. The graph is recompiled."""
    before = sum(n.op == "call_function" for n in graph.graph.nodes)
    _fold_constants(graph, inputs)
    _drop_identities(graph)
    _merge_duplicates(graph)
    _prune(graph)
    graph.graph.lint()
    graph.recompile()
    return before - sum(n.op == "call_function" for n in graph.graph.nodes)


def flat_arguments(graph: fx.GraphModule) -> None:
    """Make ``graph`` take its placeholders as positional arguments and return its single
    output as is: ``make_fx`` graphs flatten and unflatten pytrees on every call."""
    graph.graph.set_codegen(fx.graph.CodeGen())
    output = next(n for n in graph.graph.nodes if n.op == "output")
    (result,) = output.args
    if isinstance(result, (list, tuple)) and len(result) == 1:
        output.args = (result[0],)
    graph.recompile()
