"""fuse-activations: a GELU that follows an nm.linear (its only user) becomes the linear's
`activation`, applied by the linear kernel to each output tile in SPAD before it is
stored (compiler/kernels/linear.py).

Unfused, the GELU is a kernel of its own that loads the linear's whole result back from
DRAM, applies the function and stores it again (~10% of DeiT-tiny's modelled cycles); fused,
the function runs on the vector unit while the matrix unit computes the next tile, and the
round trip through DRAM is gone. Numerically nothing changes: the same function is applied
to the same float32 values. The GELU's layer disappears from reports (its work is the
linear's), and the linear keeps its name, so --sparsity files still name it.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.passes import ModulePass

from nmc.compiler.dialects.nm import LINEAR_ACTIVATIONS, GeluOp, LinearOp

_BY_APPROXIMATION = {approx: name for name, approx in LINEAR_ACTIVATIONS.items()}


@dataclass(frozen=True)
class FuseActivations(ModulePass):
    name = "fuse-activations"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for gelu in [o for o in op.walk() if isinstance(o, GeluOp)]:
            linear = gelu.input.owner
            if (not isinstance(linear, LinearOp) or linear.activation is not None
                    or len(list(linear.result.uses)) != 1):
                continue
            linear.properties["activation"] = StringAttr(
                _BY_APPROXIMATION[gelu.approximate.data])
            gelu.result.replace_all_uses_with(linear.result)
            gelu.detach()
            gelu.erase()
