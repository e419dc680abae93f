"""A reference interpreter of nm (and win) IR, with PyTorch ops: what a module computes,
without tiling, memories or the ISA.

The window-keep search (compiler/transforms/window_prune.py) scores a configuration by the
output error of the pruned module itself, which has no PyTorch model: the model file holds
the dense graph. Interpreting the nm IR evaluates exactly the computation that will be
compiled (float32, PyTorch's kernels; `nm.linear` with a `sparsity` uses the N:M mask of
`nmc.common.nm_format`, the one prune-and-pack packs by).

    outputs = interpret(module, {"x": array}, weights)     # weights: load_weights(model)
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Operation

from nmc.compiler.dialects import nm, win
from nmc.compiler.dialects.nm_attrs import input_names, output_names
from nmc.common import nm_format
from nmc.common.errors import NmcError


class InterpretError(NmcError):
    """An op the interpreter does not know (only nm and win ops are interpreted)."""


def _linear(op: nm.LinearOp, x, w, b=None):
    pattern = op.sparsity_pattern
    if pattern is not None:
        w = w * torch.from_numpy(nm_format.nm_mask(w.numpy(), *pattern))
    y = F.linear(x, w, b)
    if op.activation_name is not None:
        y = F.gelu(y, approximate=nm.LINEAR_ACTIVATIONS[op.activation_name])
    return y


def _attention(op: nm.AttentionOp, qkv, bias=None):
    B, N, C3 = qkv.shape
    h, d = op.heads_value, C3 // 3 // op.heads_value
    q, k, v = qkv.reshape(B, N, 3, h, d).permute(2, 0, 3, 1, 4)
    scores = (q * op.scale_value) @ k.transpose(-2, -1)
    if bias is not None:  # batch b uses bias[b % G]
        G = bias.shape[0]
        scores = (scores.reshape(B // G, G, h, N, N) + bias).reshape(B, h, N, N)
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, N, h * d)


def _permute_rows(op: nm.PermuteRowsOp, x):
    rows = torch.tensor(op.row_indices)
    return x.reshape(-1, x.shape[-1])[rows].reshape(nm.tensor_shape(op.result))


def _rank(op: win.RankOp, mags):
    scores = torch.linalg.vector_norm(mags, dim=-1)  # [B, W]
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return order[:, : op.keep_value].float()


def _table_rows(op, idx) -> torch.Tensor:
    """The table rows block i of each image maps to (see the `win` dialect)."""
    chosen = idx[:, : op.count_value].long()  # [B, count]
    if not op.is_shared:
        chosen = chosen + op.windows * torch.arange(chosen.shape[0])[:, None]
    return chosen.reshape(-1)


def _scatter(op: win.ScatterOp, table, idx, values):
    out = table.clone()
    out[_table_rows(op, idx)] = values
    return out


_SEMANTICS: dict[type[Operation], Callable] = {
    nm.LinearOp: _linear,
    nm.LayerNormOp: lambda op, x, g, b: F.layer_norm(x, x.shape[-1:], g, b, op.eps_value),
    nm.GeluOp: lambda op, x: F.gelu(x, approximate=op.approximate.data),
    nm.ReluOp: lambda op, x: torch.relu(x),
    nm.ScaleOp: lambda op, x: x * torch.tensor(op.scale_value, dtype=torch.float32),
    nm.SoftmaxOp: lambda op, x: torch.softmax(x, -1),
    nm.AddOp: lambda op, a, b: a + b,
    nm.SubOp: lambda op, a, b: a - b,
    nm.MulOp: lambda op, a, b: a * b,
    nm.PatchEmbedOp: lambda op, x, w, b: F.conv2d(x, w, b, stride=op.patch_size)
    .flatten(2).transpose(1, 2),
    nm.ConcatOp: lambda op, *xs: torch.cat(xs, op.axis_value),
    nm.AttentionOp: _attention,
    nm.SelectOp: lambda op, x: x[:, op.index_value],
    nm.ReshapeOp: lambda op, x: x.reshape(nm.tensor_shape(op.result)),
    nm.PermuteRowsOp: _permute_rows,
    nm.MeanOp: lambda op, x: x.reshape(x.shape[0], -1, x.shape[-1]).mean(1),
    win.MagnitudeOp: lambda op, x: x.abs().mean(-1, keepdim=True),
    win.RankOp: _rank,
    win.GatherOp: lambda op, t, idx: t[_table_rows(op, idx)],
    win.ScatterOp: _scatter,
}


def _tensor(value) -> torch.Tensor:
    """A float32 tensor of a weight (tensors as they are: a search converts them once)."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(np.asarray(value, np.float32))  # a copy: the array may be read-only


Observer = Callable[[Operation, list[torch.Tensor]], None]


def interpret(module: ModuleOp, inputs: Mapping[str, np.ndarray],
              weights: Mapping[str, np.ndarray],
              observe: Observer | None = None) -> dict[str, np.ndarray]:
    """The outputs (by name) of `@main` for `inputs` (by name), parameters from `weights`
    (arrays or float32 tensors, by parameter name). `observe(op, operands)` is called
    before each op runs (the int8 calibration measures the inputs of the linears)."""
    func = next(op for op in module.walk() if isinstance(op, FuncOp))
    in_names, out_names = input_names(func), output_names(func)
    env = {arg: torch.as_tensor(np.asarray(inputs[name], np.float32))
           for arg, name in zip(func.body.block.args, in_names)}
    with torch.no_grad():
        for op in func.body.block.ops:
            if isinstance(op, nm.ParamOp):
                env[op.result] = _tensor(weights[op.param_name.data])
            elif isinstance(op, ReturnOp):
                return {n: env[v].numpy() for n, v in zip(out_names, op.operands)}
            else:
                sem = _SEMANTICS.get(type(op))
                if sem is None:
                    raise InterpretError(f"cannot interpret {op.name}")
                operands = [env[v] for v in op.operands]
                if observe is not None:
                    observe(op, operands)
                env[op.results[0]] = sem(op, *operands)
    raise InterpretError("@main has no return")
