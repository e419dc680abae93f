"""The target check of the N:M patterns on a module's nm.linear ops.

The nm.linear verifier can only check 0 < N <= M: whether the matrix unit runs a pattern
depends on the target. This check is the rest, in one place: the target supports the
pattern and M divides the layer's K. assign-sparsity runs it on every linear (the patterns
it sets and the ones the IR already carries), so in `nmc compile` an unsupported pattern is
refused before schedule-tiles costs it; schedule-tiles and prune-and-pack run it too, for
`nmc opt` pipelines that start after assign-sparsity.
"""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp

from nmc.compiler.dialects.nm import LinearOp, tensor_shape
from nmc.compiler.sparsity.spec import SparsityError, check_supported
from nmc.isa.target import Target


def check_linear_patterns(module: ModuleOp, target: Target) -> None:
    """SparsityError naming the layer of the first nm.linear whose sparse pattern `target`
    does not support, or whose K is not a multiple of M."""
    for op in module.walk():
        if not isinstance(op, LinearOp) or op.sparsity_pattern is None:
            continue
        n, m = op.sparsity_pattern
        layer = op.layer_name
        check_supported(f"layer '{layer}'", (n, m), target)
        K = tensor_shape(op.weight)[1]
        if K % m:
            raise SparsityError(
                f"layer '{layer}': input dimension K = {K} is not a multiple of "
                f"M = {m}, so the {n}:{m} pattern cannot group it")
