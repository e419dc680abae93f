"""Swin blocks in the nm IR, and their window-pruning rewrite (SparseViT).

Shared by the window-prune pass (compiler/transforms/window_prune.py), which applies keep
ratios, and the SparseViT search (window_search.py), which prunes copies of the module to
model their latency.

A Swin block, as raise-torch-to-nm leaves it, is

    n1 = layer_norm(x); w = permute_rows(n1)          # cyclic shift + window partition
    y = linear(attention(linear(w), bias))             # qkv, window attention, proj
    x1 = x + permute_rows(y)                           # window reverse + roll back
    x2 = x1 + fc2(gelu(fc1(layer_norm(x1))))

or, in a stage of one window per image (Swin-T's last stage at 224), the same with
`reshape`s instead of the two `permute_rows`: x [B, H, W, C] <-> [B, H*W, C].

With keep ratio r < 1 `apply_ratios` makes it what models/window_prune.py computes:

    xw = permute_rows(x)                               # the block input, in windows
    g  = win.gather(xw, idx, k)                        # the k kept windows
    g1 = g + proj(attention(qkv(layer_norm(g)), bias gathered too when it differs per window))
    g2 = g1 + fc2(gelu(fc1(layer_norm(g1))))
    x2 = permute_rows(win.scatter(xw, idx, g2))        # pruned windows pass through

(the norms, the MLP and the residuals are per token, so they commute with the window
permutation). `idx` is the ranking of the block's window grid: per stage, the token
magnitudes (`win.magnitude`) of the input of its first pruned block, permuted like that
grid's windows, ranked by `win.rank` (L2 norm of each window's magnitudes, best first; per
image; equal scores keep the lower window index, as the reference's stable sort) once per
grid; every block keeps a prefix of its grid's ranking, k = floor(r * windows per image)
(`nmc.common.window_keep.num_kept`, SparseViT's rule, which the reference shares).

A block that keeps k = 0 windows is removed (`skip_block`): its result is its input, and
no instruction runs for it (SparseViT gathers no window; the residuals pass the input
through). A one-window block keeps 1 (dense) or 0 windows (skipped), never a subset.

Layer names of the linears are kept, so N:M sparsity (assign-sparsity, after window-prune)
composes.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.rewriter import InsertPoint, Rewriter

from nmc.common.errors import NmcError
from nmc.common.window_keep import num_kept
from nmc.compiler.dialects.nm import (
    AddOp, AttentionOp, ConcatOp, GeluOp, LayerNormOp, LinearOp, PermuteRowsOp, ReshapeOp,
    tensor_shape,
)
from nmc.compiler.dialects.win import GatherOp, MagnitudeOp, RankOp, ScatterOp

SCORING_OPS = (".window_magnitude", ".window_scores", ".window_rank")
"""Layer-name suffixes of the ops window-prune adds to score windows (per stage or grid)."""
GATHERING_OPS = (".window_gather", ".window_bias_gather", ".window_scatter")
"""... and of those that move the kept windows (and their bias terms) in and out."""


class WindowPruneError(NmcError):
    """A bad --window-keep value, or a model whose blocks are not Swin blocks."""


@dataclass
class SwinBlock:
    """The ops of one Swin block, in order (see the module docstring)."""

    name: str
    norm1: LayerNormOp
    partition: PermuteRowsOp | ReshapeOp  # a reshape where the image is one window
    qkv: LinearOp
    attn: AttentionOp
    proj: LinearOp
    reverse: PermuteRowsOp | ReshapeOp
    add1: AddOp
    reshape: ReshapeOp | None
    norm2: LayerNormOp
    fc1: LinearOp
    gelu: GeluOp
    fc2: LinearOp
    add2: AddOp

    @property
    def x(self) -> SSAValue:
        """The block input (read when needed: rewriting the block before replaces it)."""
        return self.norm1.input

    @property
    def stage(self) -> str:
        return self.name.rsplit(".blocks.", 1)[0] if ".blocks." in self.name else self.name

    @property
    def images(self) -> int:
        return tensor_shape(self.norm1.input)[0]

    @property
    def windows(self) -> int:
        """Windows per image (SparseViT ranks and keeps them per image)."""
        return tensor_shape(self.partition.result)[0] // self.images

    @property
    def grid(self) -> tuple[int, ...]:
        """The block's window grid (blocks of a stage with the same grid share a ranking):
        the partition's row order; () for one window per image."""
        if isinstance(self.partition, PermuteRowsOp):
            return tuple(self.partition.row_indices)
        return ()

    def ops(self) -> list[Operation]:
        ops = [self.norm1, self.partition, self.qkv, self.attn, self.proj, self.reverse,
               self.add1, self.reshape, self.norm2, self.fc1, self.gelu, self.fc2, self.add2]
        return [op for op in ops if op is not None]


def _only_use(value: SSAValue, kind: type[Operation]) -> Operation | None:
    uses = list(value.uses)
    if len(uses) == 1 and isinstance(uses[0].operation, kind):
        return uses[0].operation
    return None


def _users(value: SSAValue, kind: type[Operation]) -> list[Operation]:
    return [u.operation for u in value.uses if isinstance(u.operation, kind)]


def _partition(norm1: LayerNormOp) -> PermuteRowsOp | ReshapeOp | None:
    """The window partition after norm1: a permutation of rows, or, where the image is one
    window, the reshape [B, H, W, C] -> [B, H*W, C] (a ViT's tokens are 3-D already)."""
    part = _only_use(norm1.result, PermuteRowsOp)
    if part is not None:
        return part
    reshape = _only_use(norm1.result, ReshapeOp)
    shape = tensor_shape(norm1.result)
    if reshape is None or len(shape) != 4:
        return None
    b, h, w, c = shape
    return reshape if tensor_shape(reshape.result) == (b, h * w, c) else None


def _reverse(proj: LinearOp, partition: PermuteRowsOp | ReshapeOp,
             norm1: LayerNormOp) -> PermuteRowsOp | ReshapeOp | None:
    """The window reverse after proj, of the same kind as the partition."""
    rev = _only_use(proj.result, type(partition))
    if isinstance(rev, ReshapeOp) and tensor_shape(rev.result) != tensor_shape(norm1.result):
        return None
    return rev


def match_block(norm1: LayerNormOp) -> SwinBlock | None:
    """The Swin block starting at `norm1`, or None when the ops around it are not one."""
    part = _partition(norm1)
    qkv = part and _only_use(part.result, LinearOp)
    attn = qkv and _only_use(qkv.result, AttentionOp)
    proj = attn and _only_use(attn.result, LinearOp)
    rev = proj and _reverse(proj, part, norm1)
    add1 = rev and _only_use(rev.result, AddOp)
    if add1 is None or norm1.input not in (add1.lhs, add1.rhs):
        return None
    x1 = add1.result
    reshape = _only_use(x1, ReshapeOp) if len(list(x1.uses)) == 1 else None
    r1 = reshape.result if reshape is not None else x1
    norms = _users(r1, LayerNormOp)
    adds = _users(r1, AddOp)
    if len(norms) != 1 or len(adds) != 1 or len(list(r1.uses)) != 2:
        return None
    norm2, add2 = norms[0], adds[0]
    fc1 = _only_use(norm2.result, LinearOp)
    gelu = fc1 and _only_use(fc1.result, GeluOp)
    fc2 = gelu and _only_use(gelu.result, LinearOp)
    if fc2 is None or _only_use(fc2.result, AddOp) is not add2:
        return None
    name = norm1.layer_name.removesuffix(".norm1")
    return SwinBlock(name, norm1, part, qkv, attn, proj, rev, add1, reshape,
                     norm2, fc1, gelu, fc2, add2)


def swin_blocks(module: ModuleOp) -> list[SwinBlock]:
    blocks = []
    for op in module.walk():
        if isinstance(op, LayerNormOp) and op.layer_name.endswith(".norm1"):
            block = match_block(op)
            if block is not None:
                blocks.append(block)
    return blocks


def padded_blocks(module: ModuleOp) -> list[str]:
    """Names of the Swin blocks whose normalized input is padded to a multiple of the window
    before its partition (timm 1.0 at an image size the window does not divide: the pad is
    an `nm.concat` with zero rows). Window pruning does not handle them: the zero tokens
    are not normalized, so the block is not per-token before the partition."""
    def padded(value: SSAValue) -> bool:  # through the cyclic shift, if any
        uses = list(value.uses)
        if len(uses) != 1:
            return False
        user = uses[0].operation
        if isinstance(user, (PermuteRowsOp, ReshapeOp)):
            return padded(user.results[0])
        return isinstance(user, ConcatOp)

    return [op.layer_name.removesuffix(".norm1") for op in module.walk()
            if isinstance(op, LayerNormOp) and op.layer_name.endswith(".norm1")
            and padded(op.result)]


def stages_of(blocks: list[SwinBlock]) -> list[list[str]]:
    """Block names grouped by stage, in order."""
    stages: dict[str, list[str]] = {}
    for b in blocks:
        stages.setdefault(b.stage, []).append(b.name)
    return list(stages.values())


def apply_ratios(blocks: list[SwinBlock], ratios: dict[str, float]) -> None:
    """Rewrite every block whose ratio keeps fewer windows than it has: remove those that
    keep none, run the others on their kept windows.

    A stage's magnitudes come from the input of its first block with a ratio below 1, as
    in the reference, even when that block keeps every window (then it needs no rewrite:
    all its windows run, which is the dense block) or none (removed: its input is its
    output). A stage where no block runs on a subset of windows scores nothing."""
    rankings: dict[tuple, SSAValue] = {}  # (stage, grid) -> indices, best first
    magnitudes: dict[str, SSAValue] = {}  # stage -> token magnitudes of its first pruned block
    kept = {b.name: num_kept(ratios[b.name], b.windows) for b in blocks}
    pruned = [b for b in blocks if 0 < kept[b.name] < b.windows]
    stages_pruned = {b.stage for b in pruned}
    for block in blocks:
        if block.stage in stages_pruned and ratios[block.name] < 1.0 \
                and block.stage not in magnitudes:
            magnitudes[block.stage] = _Builder(block.add2).add(
                MagnitudeOp(block.x, block.name + SCORING_OPS[0])).result
        if kept[block.name] == 0:
            skip_block(block)
            continue
        if block not in pruned:  # keeps every window: the dense block
            continue
        b = _Builder(block.add2)
        key = (block.stage, block.grid)
        if key not in rankings:
            tokens = tensor_shape(block.partition.result)[1]
            grid_k = max(kept[bb.name] for bb in pruned
                         if bb.stage == block.stage and bb.grid == block.grid)
            mags = b.add(PermuteRowsOp(magnitudes[block.stage], list(block.grid),
                                       (block.images * block.windows, tokens),
                                       block.name + SCORING_OPS[1])).result
            mags = b.add(ReshapeOp(mags, (block.images, block.windows, tokens))).result
            rankings[key] = b.add(RankOp(mags, grid_k, block.name + SCORING_OPS[2])).result
        prune_block(block, rankings[key], kept[block.name])


class _Builder:
    """Inserts new ops, in order, before an anchor op: a block's last op, which every value
    the block uses (its input, its parameters) dominates."""

    def __init__(self, anchor: Operation):
        self.anchor = anchor

    def add(self, op: Operation) -> Operation:
        Rewriter.insert_op(op, InsertPoint.before(self.anchor))
        return op


def skip_block(block: SwinBlock) -> None:
    """Remove `block` (it keeps no window): its result is its input."""
    _replace_block(block, block.x)


def _replace_block(block: SwinBlock, y: SSAValue) -> None:
    """Replace the block's result by `y` (reshaped to the result's shape) and erase its ops."""
    out_shape = tensor_shape(block.add2.result)
    if tensor_shape(y) != out_shape:
        y = _Builder(block.add2).add(ReshapeOp(y, out_shape)).result
    block.add2.result.replace_all_uses_with(y)
    for op in reversed(block.ops()):
        op.detach()
        op.erase()


def prune_block(block: SwinBlock, idx: SSAValue, k: int) -> None:
    """Rewrite `block` to run on the k windows `idx` names (module docstring)."""
    b = _Builder(block.add2)
    n = block.name
    rows = block.partition.row_indices
    win_shape = tensor_shape(block.partition.result)
    xw = b.add(PermuteRowsOp(block.x, rows, win_shape, f"{n}.window_partition")).result
    g = b.add(GatherOp(xw, idx, k, n + GATHERING_OPS[0])).result
    norm1, attn = block.norm1, block.attn
    n1 = b.add(LayerNormOp(g, norm1.gamma, norm1.beta, norm1.eps, norm1.layer)).result
    qkv = b.add(_linear_like(block.qkv, n1)).result
    bias = attn.bias
    groups = tensor_shape(bias)[0] if bias is not None else 1
    if groups > 1:  # a bias + mask term per window: per window of the grid (the same for
        # every image) or per window of every image; the kept windows take theirs
        shared = groups == block.windows
        if not shared and groups != block.images * block.windows:
            raise WindowPruneError(f"{block.attn.layer_name}: an attention bias of {groups} "
                                   f"terms fits neither {block.windows} windows nor "
                                   f"{block.images} x {block.windows}")
        bias = b.add(GatherOp(bias, idx, k, n + GATHERING_OPS[1], shared=shared)).result
    a = b.add(AttentionOp(qkv, attn.heads, attn.scale, attn.layer, bias)).result
    proj = b.add(_linear_like(block.proj, a)).result
    g1 = b.add(AddOp(g, proj, block.add1.layer)).result
    n2 = b.add(LayerNormOp(g1, block.norm2.gamma, block.norm2.beta, block.norm2.eps,
                           block.norm2.layer)).result
    f1 = b.add(_linear_like(block.fc1, n2)).result
    ge = b.add(GeluOp(f1, block.gelu.layer, block.gelu.approximate)).result
    f2 = b.add(_linear_like(block.fc2, ge)).result
    g2 = b.add(AddOp(g1, f2, block.add2.layer)).result
    xw2 = b.add(ScatterOp(xw, idx, g2, k, n + GATHERING_OPS[2])).result
    rev = block.reverse
    y = b.add(PermuteRowsOp(xw2, rev.row_indices, tensor_shape(rev.result),
                            f"{n}.window_reverse")).result
    _replace_block(block, y)


def _linear_like(op: LinearOp, input: SSAValue) -> LinearOp:
    return LinearOp(input, op.weight, op.bias, op.layer, op.sparsity_pattern,
                    op.activation_name)
