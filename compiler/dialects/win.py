"""The `win` dialect: SparseViT window pruning (data-dependent window selection).

The ops extend the nm compute ops (same `layer` property, DRAM tensors in and out, a kernel
each in compiler/kernels/window.py); `window-prune` (compiler/transforms/window_prune.py)
builds them. Window indices are data: a tensor of f32 values holding integers, computed at
run time by `win.rank` and consumed by `win.gather` / `win.scatter` (the `topk`, `gload`
and `gstore` instructions of the ISA).

| op             | operands                                      | result           | properties |
|----------------|-----------------------------------------------|------------------|------------|
| `win.magnitude`| x [..., C]                                    | [..., 1]         | `layer`    |
| `win.rank`     | magnitudes per window [B, W, N]               | indices [B, k]   | `layer`, `keep` (k) |
| `win.gather`   | table [T, ...], indices [B, >= count]         | [B*count, ...]   | `layer`, `count`, `shared` (opt.) |
| `win.scatter`  | table [T, ...], indices [B, >= count], values [B*count, ...] | [T, ...] | `layer`, `count` |

`win.magnitude`: mean of |x| over the last dim (SparseViT's token magnitude).
`win.rank`: per image b, the window scores are the L2 norms of the rows of input[b]; the
result row b holds the indices (within the image) of the `keep` best, best first, ties to
the lower index (as models/window_prune.rank_windows).
`win.gather`: the table's blocks (rows along its first dim) are the images' windows, T/B per
image; block b*count + i of the result is block b*(T/B) + indices[b, i] of the table
(i < count). With the `shared` property (1) every image gathers from the whole table
(T = W blocks: the attention bias + mask terms, the same for every image): block
b*count + i of the result is block indices[b, i] of the table. `win.scatter`: the
table with block b*(T/B) + indices[b, i] replaced by block b*count + i of the values; the
other blocks are the table's.
"""

from __future__ import annotations

import math
from typing import ClassVar

from xdsl.dialects.builtin import I64, IntegerAttr, StringAttr
from xdsl.ir import Dialect, SSAValue
from xdsl.irdl import irdl_op_definition, operand_def, opt_prop_def, prop_def
from xdsl.utils.exceptions import VerifyException

from nmc.compiler.dialects.nm import (
    F32Tensor, _ComputeOp, _fmt, _i64, compute_format, tensor_shape,
)


@irdl_op_definition
class MagnitudeOp(_ComputeOp):
    name = "win.magnitude"
    KIND: ClassVar[str] = "window_magnitude"

    input = operand_def(F32Tensor)

    assembly_format = compute_format("$input")

    def __init__(self, input: SSAValue, layer: str | StringAttr):
        self._build([input], (*tensor_shape(input)[:-1], 1), layer)

    def _verify_shapes(self) -> None:
        x = tensor_shape(self.input)
        if not x:
            raise VerifyException(f"{self.where}: input must have rank >= 1")
        self._check_result_shape((*x[:-1], 1))


@irdl_op_definition
class RankOp(_ComputeOp):
    name = "win.rank"
    KIND: ClassVar[str] = "window_rank"

    input = operand_def(F32Tensor)

    keep = prop_def(IntegerAttr[I64])

    assembly_format = compute_format("$input `keep` $keep")

    def __init__(self, input: SSAValue, keep: int, layer: str | StringAttr):
        self._build([input], (tensor_shape(input)[0], int(keep)), layer, keep=_i64(keep))

    @property
    def keep_value(self) -> int:
        return self.keep.value.data

    def _verify_shapes(self) -> None:
        x = tensor_shape(self.input)
        where = self.where
        if len(x) != 3:
            raise VerifyException(
                f"{where}: input must be [images, windows, tokens], got {_fmt(x)}")
        if not 1 <= self.keep_value <= x[1]:
            raise VerifyException(f"{where}: keep {self.keep_value} must be in [1, {x[1]}]")
        self._check_result_shape((x[0], self.keep_value))


class _WindowTableOp(_ComputeOp):
    """Shared by gather and scatter: a window table, indices, a `count` of windows moved.
    The subclasses declare the operands `table` and `indices` first (IRDL collects a
    subclass's fields before its base's, so operands declared here would come last)."""

    count = prop_def(IntegerAttr[I64])

    @property
    def count_value(self) -> int:
        return self.count.value.data

    def _verify_shapes(self) -> None:
        """Checks the indices and count, then the op's own shapes (`_verify_moved`)."""
        where = self.where
        table, idx, count = tensor_shape(self.table), tensor_shape(self.indices), self.count_value
        if len(idx) != 2 or idx[1] < count:
            raise VerifyException(
                f"{where}: indices must be [images, n >= {count}], got {_fmt(idx)}")
        if not table or (not self.is_shared and table[0] % idx[0]):
            raise VerifyException(f"{where}: the table's {table[0] if table else 0} windows "
                                  f"do not split into {idx[0]} images")
        if not 1 <= count <= self.windows:
            raise VerifyException(f"{where}: count {count} must be in [1, {self.windows}]")
        self._verify_moved(table)

    def _verify_moved(self, table: tuple[int, ...]) -> None:
        """The checks of the gathered or scattered blocks, given the table shape."""

    @property
    def moved_shape(self) -> tuple[int, ...]:
        """The shape of the blocks moved: [images * count, block dims of the table...]."""
        return (self.images * self.count_value, *tensor_shape(self.table)[1:])

    @property
    def is_shared(self) -> bool:
        shared = self.properties.get("shared")
        return shared is not None and shared.value.data == 1

    @property
    def windows(self) -> int:
        """Blocks an image's indices choose among."""
        table = tensor_shape(self.table)[0]
        return table if self.is_shared else table // self.images

    @property
    def images(self) -> int:
        return tensor_shape(self.indices)[0]


@irdl_op_definition
class GatherOp(_WindowTableOp):
    name = "win.gather"
    KIND: ClassVar[str] = "window_gather"

    table = operand_def(F32Tensor)
    indices = operand_def(F32Tensor)

    shared = opt_prop_def(IntegerAttr[I64])

    assembly_format = compute_format(
        "$table `,` $indices `count` $count (`shared` $shared^)?")

    def __init__(self, table: SSAValue, indices: SSAValue, count: int, layer: str | StringAttr,
                 shared: bool = False):
        images = tensor_shape(indices)[0]
        props = {"count": _i64(count)}
        if shared:
            props["shared"] = _i64(1)
        self._build([table, indices], (images * int(count), *tensor_shape(table)[1:]), layer,
                    **props)

    def _verify_moved(self, table: tuple[int, ...]) -> None:
        self._check_result_shape(self.moved_shape)


@irdl_op_definition
class ScatterOp(_WindowTableOp):
    name = "win.scatter"
    KIND: ClassVar[str] = "window_scatter"

    table = operand_def(F32Tensor)
    indices = operand_def(F32Tensor)
    values = operand_def(F32Tensor)

    assembly_format = compute_format("$table `,` $indices `,` $values `count` $count")

    def __init__(self, table: SSAValue, indices: SSAValue, values: SSAValue, count: int,
                 layer: str | StringAttr):
        self._build([table, indices, values], tensor_shape(table), layer, count=_i64(count))

    def _verify_moved(self, table: tuple[int, ...]) -> None:
        values, want = tensor_shape(self.values), self.moved_shape
        if tuple(values) != want:
            raise VerifyException(
                f"{self.where}: values must be {_fmt(want)}, got {_fmt(values)}")
        self._check_result_shape(table)


def block_words(shape: tuple[int, ...]) -> int:
    """Words of one block (one window) of a table [W, ...]."""
    return math.prod(shape[1:])


WIN_OPS = (MagnitudeOp, RankOp, GatherOp, ScatterOp)
WIN = Dialect("win", list(WIN_OPS), [])
