"""BatchNorm in eval mode after a convolution, folded into the convolution's weights.

    conv2d(x, w, b) -> _native_batch_norm_legit_no_training(., gamma, beta, mean, var, eps)
      -> conv2d(x, w * s, (b - mean) * s + beta),   s = gamma / sqrt(var + eps) per channel

Eval-mode BatchNorm is a per-channel affine map with constant coefficients (its running
statistics are buffers), so it composes with the convolution before it: the folded weight
and bias are computed once here (in float64, then stored as f32 lifted constants
`<conv path>.folded_<conv node>_weight` / `_bias`), and the compiler sees one Conv2d with
a bias. The result equals PyTorch's conv-then-BN up to f32 rounding (tests compare within
1e-4). A BatchNorm that does not follow a convolution read by nothing else stays, and is
reported unsupported.
"""

from __future__ import annotations

import operator

import torch
from torch.export import ExportedProgram

from nmc.compiler.frontend.lifted import fake_mode, lift_constant, placeholder_tensors

_aten = torch.ops.aten
_BATCH_NORM = _aten._native_batch_norm_legit_no_training.default
_CONV2D = _aten.conv2d.default


def _value(arg: object, values: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The tensor a placeholder argument holds (None for a None argument)."""
    if arg is None:
        return None
    if isinstance(arg, torch.fx.Node) and arg.op == "placeholder" and arg.name in values:
        return values[arg.name].detach().to(torch.float64)
    raise LookupError


def _fold_one(ep: ExportedProgram, bn: torch.fx.Node, values: dict[str, torch.Tensor],
              mode) -> bool:  # noqa: ANN001 - FakeTensorMode
    conv = bn.args[0]
    if not (isinstance(conv, torch.fx.Node) and conv.target is _CONV2D
            and len(conv.users) == 1):
        return False
    getters = list(bn.users)
    if not all(g.target is operator.getitem for g in getters):
        return False
    if any(g.args[1] != 0 and g.users for g in getters):
        return False  # the batch statistics are read: not a plain eval-mode BatchNorm
    x, w, *rest = conv.args
    b = rest[0] if rest else conv.kwargs.get("bias")
    try:
        weight, bias = _value(w, values), _value(b, values)
        gamma, beta, mean, var = (_value(a, values) for a in bn.args[1:5])
    except LookupError:
        return False  # computed weights or statistics: not foldable here
    if weight is None or mean is None or var is None:
        return False
    eps = float(bn.args[6])
    scale = torch.rsqrt(var + eps) * (gamma if gamma is not None else 1.0)
    folded_w = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    folded_b = ((bias if bias is not None else 0.0) - mean) * scale
    if beta is not None:
        folded_b = folded_b + beta
    w_node, _ = lift_constant(ep, conv, folded_w, mode, "_weight")
    b_node, _ = lift_constant(ep, conv, folded_b, mode, "_bias")
    graph = ep.graph_module.graph
    with graph.inserting_before(bn):
        new_conv = graph.call_function(_CONV2D, (x, w_node, b_node, *rest[1:]),
                                       {k: v for k, v in conv.kwargs.items() if k != "bias"})
    new_conv.meta.update(conv.meta)
    for g in getters:
        if g.args[1] == 0:
            g.replace_all_uses_with(new_conv)
        graph.erase_node(g)
    graph.erase_node(bn)
    graph.erase_node(conv)
    return True


def fold_batchnorm(ep: ExportedProgram) -> ExportedProgram:
    """Fold every eval-mode BatchNorm that follows a conv2d into it, in place."""
    graph = ep.graph_module.graph
    norms = [n for n in graph.nodes if n.op == "call_function" and n.target is _BATCH_NORM]
    if not norms:
        return ep
    values = placeholder_tensors(ep)
    mode = fake_mode(ep)
    if any([_fold_one(ep, bn, values, mode) for bn in norms]):
        graph.lint()
        ep.graph_module.recompile()
    return ep


__all__ = ["fold_batchnorm"]
