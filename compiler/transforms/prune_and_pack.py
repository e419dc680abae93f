"""prune-and-pack: give every N:M sparse nm.linear's weight its packed DRAM layout.

For each `nm.linear` whose `sparsity` property is a sparse N:M pattern (N < M; set by
`assign-sparsity` or by hand), the pass checks the pattern against the target
(`check_linear_patterns`, as assign-sparsity did) and that the weight can be stored packed
(a model parameter that no other op reads), and marks the weight's `nm.param` with the
packed layout `#nm.layout<nm_pack N:M, f32>` (`nm_attrs.set_layout`). The values
themselves are packed at emission, from the model's weights (`nmc.common.nm_format.pack`:
per group of M weights along K the N of largest magnitude, ties to the lower index), so
the pass only decides; `plan-memory` allocates the packed size and `lower-nm-to-isa` emits
the sparse kernel (`spmatmul`).
A model without sparse linears is left unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp

from nmc.common import nm_format
from nmc.compiler.dialects.nm import LinearOp, ParamOp
from nmc.compiler.dialects.nm_attrs import NM_PACK, LayoutAttr, layout, set_layout
from nmc.compiler.sparsity.spec import SparsityError
from nmc.compiler.sparsity.target_check import check_linear_patterns
from nmc.compiler.transforms.target_option import TargetedPass


@dataclass(frozen=True)
class PruneAndPack(TargetedPass):
    name = "prune-and-pack"


    def apply(self, ctx: Context, op: ModuleOp) -> None:
        linears = [o for o in op.walk() if isinstance(o, LinearOp)]
        if not any(o.sparsity_pattern for o in linears):
            self.check_target(op)
            return  # dense model: nothing to do
        check_linear_patterns(op, self.target_for(op))
        chosen: dict = {}  # weight value -> (pattern, layer)
        for lin in linears:
            pattern = lin.sparsity_pattern
            layer = lin.layer_name
            if pattern is not None and not isinstance(lin.weight.owner, ParamOp):
                raise SparsityError(
                    f"layer '{layer}': an N:M sparse weight must be a model parameter")
            previous = chosen.setdefault(lin.weight, (pattern, layer))
            if previous[0] != pattern:
                shown = [f"'{l}' ({nm_format.pattern_text(p)})"
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
                        f"it cannot be stored {nm_format.pattern_text(pattern)} packed")
            packed = LayoutAttr(NM_PACK, *pattern)
            current = layout(value.owner)  # the quantize pass may have made it int8
            if current is not None:
                packed = LayoutAttr(NM_PACK, *pattern, current.element_type)
            set_layout(value.owner, packed)
