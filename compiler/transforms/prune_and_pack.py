"""prune-and-pack: give every N:M sparse nm.linear's weight its packed DRAM layout.

For each `nm.linear` whose `sparsity` property is a sparse N:M pattern (N < M; set by
`assign-sparsity` or by hand), the pass checks that the target's matrix unit supports the
pattern and that K is a multiple of M, and marks the weight's `nm.param` with the packed
layout `#nm.layout<nm_pack N:M, f32>` (`nm_attrs.set_layout`). The values themselves are computed at emission, from the
model's weights (`nmc.models.nm_sparsity.pack_nm`: per group of M weights along K the N of
largest magnitude, ties to the lower index), so the pass only decides; `plan-memory`
allocates the packed size and `lower-nm-to-isa` emits the sparse kernel (`spmatmul`).
A model without sparse linears is left unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from nmc.compiler.dialects.nm import LinearOp, ParamOp, tensor_shape
from nmc.compiler.dialects.nm_attrs import NM_PACK, LayoutAttr, set_layout
from nmc.compiler.kernels.linear import linear_pattern
from nmc.compiler.transforms.target_option import check_target_option, resolve_target
from nmc.compiler.sparsity.spec import SparsityError, check_supported, format_pattern


@dataclass(frozen=True)
class PruneAndPack(ModulePass):
    name = "prune-and-pack"

    target: str = ""  # "": the module's target (nm.target), else DEFAULT_TARGET

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        linears = [o for o in op.walk() if isinstance(o, LinearOp)]
        if not any(linear_pattern(o) for o in linears):
            check_target_option(op, self.target, self.name)
            return  # dense model: nothing to do
        target = resolve_target(op, self.target, self.name)
        chosen: dict = {}  # weight value -> (pattern, layer)
        for lin in linears:
            pattern = linear_pattern(lin)
            layer = lin.layer_name
            if pattern is not None:
                n, m = pattern
                check_supported(f"layer '{layer}'", pattern, target)
                K = tensor_shape(lin.weight)[1]
                if K % m:
                    raise SparsityError(
                        f"layer '{layer}': input dimension K = {K} is not a multiple of "
                        f"M = {m}, so the {n}:{m} pattern cannot group it")
                if not isinstance(lin.weight.owner, ParamOp):
                    raise SparsityError(
                        f"layer '{layer}': an N:M sparse weight must be a model parameter")
            previous = chosen.setdefault(lin.weight, (pattern, layer))
            if previous[0] != pattern:
                shown = [f"'{l}' ({format_pattern(p)})"
                         for p, l in (previous, (pattern, layer))]
                raise SparsityError(
                    f"weight '{lin.weight.owner.param_name.data}' is shared by layers "
                    f"{shown[0]} and {shown[1]} with different sparsity patterns")
        for value, (pattern, layer) in chosen.items():
            if pattern is None:
                continue
            # a sparse weight read by anything but its linear(s) would need it dense too
            for use in value.uses:
                if not isinstance(use.operation, LinearOp) or use.index != 1:
                    raise SparsityError(
                        f"weight of layer '{layer}' is also used by {use.operation.name}; "
                        f"it cannot be stored {format_pattern(pattern)} packed")
            set_layout(value.owner, LayoutAttr(NM_PACK, *pattern))
