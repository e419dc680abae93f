"""Which kernel implements each nm op (the protocol: kernels/kernel.py).

`schedule-tiles` calls `choose`, `plan-memory` `scratch_words` and `transposed`,
`lower-nm-to-isa` `emit`; the ELSA and SparseViT searches ask `op_cycles`. All see an op
only through this table, so adding an op to the backend means adding one entry here.
"""

from __future__ import annotations

from xdsl.ir import Operation

from nmc.compiler.dialects.nm import (
    AddOp, AttentionOp, ConcatOp, GeluOp, LayerNormOp, LinearOp, MeanOp, MulOp, PatchEmbedOp,
    PermuteRowsOp, ReluOp, ScaleOp, SelectOp, SoftmaxOp, SubOp,
)
from nmc.compiler.dialects.win import GatherOp, MagnitudeOp, RankOp, ScatterOp
from nmc.compiler.kernels.attention import AttentionKernel
from nmc.compiler.kernels.copy import ConcatProblem, CopyKernel, PermuteRowsProblem, SelectProblem
from nmc.compiler.kernels.eltwise import RowwiseKernel, RowwiseProblem
from nmc.compiler.kernels.kernel import Kernel
from nmc.compiler.kernels.linear import LINEAR
from nmc.compiler.kernels.mean import MeanKernel
from nmc.compiler.kernels.patch_embed import PatchEmbedKernel
from nmc.compiler.kernels.window import GatherKernel, MagnitudeKernel, RankKernel, ScatterKernel
from nmc.isa.target import Target

KERNELS: dict[str, Kernel] = {
    LinearOp.name: LINEAR,
    GeluOp.name: RowwiseKernel(RowwiseProblem.of_gelu),
    ReluOp.name: RowwiseKernel(RowwiseProblem.of_relu),
    ScaleOp.name: RowwiseKernel(RowwiseProblem.of_scale),
    SoftmaxOp.name: RowwiseKernel(RowwiseProblem.of_softmax),
    AddOp.name: RowwiseKernel(RowwiseProblem.of_binary),
    SubOp.name: RowwiseKernel(RowwiseProblem.of_binary),
    MulOp.name: RowwiseKernel(RowwiseProblem.of_binary),
    LayerNormOp.name: RowwiseKernel(RowwiseProblem.of_layernorm),
    AttentionOp.name: AttentionKernel(),
    PatchEmbedOp.name: PatchEmbedKernel(),
    ConcatOp.name: CopyKernel(ConcatProblem),
    SelectOp.name: CopyKernel(SelectProblem),
    PermuteRowsOp.name: CopyKernel(PermuteRowsProblem),
    MeanOp.name: MeanKernel(),
    # window pruning
    MagnitudeOp.name: MagnitudeKernel(),
    RankOp.name: RankKernel(),
    GatherOp.name: GatherKernel(),
    ScatterOp.name: ScatterKernel(),
}


def op_cycles(op: Operation, target: Target) -> int:
    """The modelled cycles of an op's kernel under the tiling schedule-tiles would choose
    (0 for ops without a kernel: reshapes, parameters): what the sparsity searches add
    up."""
    kernel = KERNELS.get(op.name)
    if kernel is None:
        return 0
    return kernel.cycles(kernel.problem_on(op, target), target, op.layer_name)

