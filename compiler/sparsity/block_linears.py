"""Which linear layers belong to a transformer block: ELSA's choice set.

ELSA prunes the linears of every transformer block (qkv, proj, fc1, fc2 in timm's names),
not the classifier head, not the patch embedding and not Swin's patch merging
(`layers.N.downsample.reduction`), which sit between blocks. Names differ between model
families (Hugging Face's `attention.query`, `intermediate.dense`, ...), so the rule is the
blocks' structure, not their names: a transformer block is a pre-norm residual
`x + f(x)` (twice: attention, then MLP), and its linears are the ones inside a residual
branch f, i.e. those that depend on the add's shortcut operand x and that its branch
operand f(x) depends on. A patch-merging reduction feeds the next block's x but is not
inside any branch; a head only follows the last block.

Window pruning (window-prune) runs before assign-sparsity and keeps the residual adds
(on the gathered windows), so the rule holds for pruned Swin blocks alike.
"""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp
from xdsl.ir import SSAValue

from nmc.compiler.dialects.nm import AddOp, LinearOp


def block_linears(module: ModuleOp) -> list[LinearOp]:
    """The nm.linear ops inside a residual branch `x + f(x)` of `module`, in program order."""
    inside: list[LinearOp] = []
    for func in (op for op in module.walk() if isinstance(op, FuncOp)):
        if func.body.blocks:
            inside.extend(_in_residual_branches(func))
    return inside


def _in_residual_branches(func: FuncOp) -> list[LinearOp]:
    # Every value gets one bit (its defining op's, or its block argument's) and the mask
    # of everything it depends on, itself included: Python ints as bit sets keep the
    # ancestry of a whole model (a few thousand values) cheap.
    block = func.body.block
    own: dict[SSAValue, int] = {}
    ancestors: dict[SSAValue, int] = {}
    for i, arg in enumerate(block.args):
        own[arg] = ancestors[arg] = 1 << i
    bit = len(block.args)
    for op in block.ops:
        mask = 0
        for operand in op.operands:
            mask |= ancestors.get(operand, 0)
        for result in op.results:
            own[result] = 1 << bit
            ancestors[result] = mask | 1 << bit
        bit += 1

    linears = [op for op in block.ops if isinstance(op, LinearOp)]
    found: set[LinearOp] = set()
    for add in (op for op in block.ops if isinstance(op, AddOp)):
        for shortcut, branch in ((add.lhs, add.rhs), (add.rhs, add.lhs)):
            x = own.get(shortcut, 0)
            if not x or not ancestors.get(branch, 0) & x:
                continue  # not x + f(x): a position embedding, two unrelated tensors
            for linear in linears:
                mine = own[linear.result]
                # strictly after x (a linear that computes x, such as a patch-merging
                # reduction before the next block, is outside) and before the add
                if mine != x and ancestors[linear.result] & x and ancestors[branch] & mine:
                    found.add(linear)
    return [op for op in linears if op in found]
