"""plan-memory: give every tensor of the nm function a DRAM address.

Layout: the model's parameters first (read-only, in the order they appear), then the
inputs and outputs, then intermediates. Intermediates are allocated in program order and
freed after their last use, so their space is reused (first fit, neighbours merged); an
op's result never shares space with its own operands. Everything is aligned to
DRAM_ALIGN words so distinct tensors never share a DMA burst.

Kernels that need DRAM of their own while they run (the patch embedding's im2col matrix)
say how much through `Kernel.scratch_words`; that space is allocated like an intermediate
that lives only during the op (it never overlaps the op's operands or result) and its
address is the op's `nm.scratch`. An `nm.reshape` is a view: its result gets the address of
its input, whose space lives until the last use of either.

Results (nm_attrs): `nm.addr` on every nm.param and compute op (its result), `nm.layout`
on params (identity, or transpose where a kernel asks for it; a packed N:M layout set by
prune-and-pack is kept, and the param gets the packed size, `param_words`), `nm.scratch`
on ops with scratch space, `nm.input_addrs` on the function and `nm.dram_words` (the DRAM
the program needs) on the module. On-chip memory is planned per kernel by the kernels themselves
(compiler/kernels/common.py).

A program that needs more DRAM than the module's target (`nm.target`) has is refused here,
at compile time, with both numbers (the emulator would refuse it only when it runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from nmc.common import nm_format
from nmc.common.errors import NmcError
from nmc.compiler.dialects.nm import ParamOp, ReshapeOp, tensor_shape
from nmc.compiler.dialects.nm_attrs import (
    IDENTITY, TRANSPOSE, LayoutAttr, dram_addr, dram_addr_of_op, layout, module_target,
    set_dram_addr, set_dram_words, set_input_addrs, set_layout, set_scratch_addr, tiling,
)
from nmc.compiler.dialects.win import ScatterOp
from nmc.compiler.kernels.registry import KERNELS
from nmc.compiler.transforms.target_option import cached_target
from nmc.compiler.kernels.int8 import stored_words as quant_stored_words

DRAM_ALIGN = 64


class DramFitError(NmcError):
    """The program needs more DRAM than its target has."""


def _aligned(words: int) -> int:
    return -(-words // DRAM_ALIGN) * DRAM_ALIGN


def _words(value: SSAValue) -> int:
    return _aligned(prod(tensor_shape(value)))


class FreeList:
    """First-fit allocation of aligned blocks above a base address."""

    def __init__(self, base: int):
        self.top = base
        self.free: list[tuple[int, int]] = []  # (start, size), sorted, merged

    def alloc(self, size: int) -> int:
        for i, (start, free_size) in enumerate(self.free):
            if free_size >= size:
                if free_size == size:
                    del self.free[i]
                else:
                    self.free[i] = (start + size, free_size - size)
                return start
        start, self.top = self.top, self.top + size
        return start

    def release(self, start: int, size: int) -> None:
        self.free.append((start, size))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for s, n in self.free:
            if merged and merged[-1][0] + merged[-1][1] == s:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((s, n))
        self.free = merged


def param_words(param: ParamOp) -> int:
    """DRAM words (unaligned) a parameter takes in its layout (packed N:M: values plus
    index words; int8: four to a word, then the rescale table, `quant.stored_words`)."""
    shape = tensor_shape(param.result)
    chosen = layout(param)
    pattern = chosen.pattern if chosen is not None else None
    if chosen is not None and chosen.int8:
        return quant_stored_words(shape[0], prod(shape[1:]), pattern)
    if pattern is None:
        return prod(shape)
    return prod(nm_format.packed_shape(shape[1], shape[0], pattern))


def _storage(value: SSAValue) -> SSAValue:
    """The value whose DRAM space `value` uses: through nm.reshape (a view) to its source."""
    while isinstance(value.owner, ReshapeOp):
        value = value.owner.input
    return value


def _in_place_operand(o: Operation, index: int, last_use: dict, outputs: set,
                      block) -> SSAValue | None:
    """The operand whose DRAM space a win.scatter's result can reuse: its table, when the
    scatter is the table's last use and the table is an op's temporary of the result's
    size. Then the scatter writes the kept windows into the table itself instead of copying
    the whole table first (the kernel skips the copy when the two addresses are equal)."""
    if not isinstance(o, ScatterOp) or o.result in outputs:
        return None
    table = _storage(o.table)
    owner = table.owner
    if (last_use.get(table) != index or table in outputs or owner is block
            or isinstance(owner, ParamOp) or _words(table) != _words(o.result)):
        return None
    return table


@dataclass(frozen=True)
class PlanMemory(ModulePass):
    name = "plan-memory"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        func = next(o for o in op.walk() if isinstance(o, FuncOp))
        block = func.body.block
        ops = list(block.ops)
        ret = next(o for o in ops if isinstance(o, ReturnOp))
        outputs = {_storage(v) for v in ret.operands}

        transposed = {v for o in ops if o.name in KERNELS for v in KERNELS[o.name].transposed(o)}
        top = 0
        for o in ops:
            if isinstance(o, ParamOp):
                set_dram_addr(o, top)
                chosen = layout(o)
                if chosen is None:
                    set_layout(o, LayoutAttr(TRANSPOSE if o.result in transposed else IDENTITY))
                elif chosen.pattern is None and not chosen.int8:  # packed and int8 are kept
                    set_layout(o, chosen.with_kind(TRANSPOSE if o.result in transposed
                                                   else IDENTITY))
                top += _aligned(param_words(o))

        input_addrs = []
        for arg in block.args:
            input_addrs.append(top)
            top += _words(arg)
        set_input_addrs(func, input_addrs)

        for value in outputs:
            if isinstance(value.owner, ParamOp) or value.owner is block:
                continue  # returned unchanged: already has an address
            set_dram_addr(value.owner, top)
            top += _words(value)

        last_use = {}
        for index, o in enumerate(ops):
            for operand in o.operands:
                last_use[_storage(operand)] = index
        temps = FreeList(top)
        for index, o in enumerate(ops):
            if isinstance(o, (ParamOp, ReturnOp, ReshapeOp)):
                continue
            in_place = _in_place_operand(o, index, last_use, outputs, block)
            for result in o.results:
                if in_place is not None:  # the result takes over the operand's space
                    set_dram_addr(o, dram_addr_of_op(in_place.owner))
                elif result not in outputs:
                    set_dram_addr(o, temps.alloc(_words(result)))
            kernel = KERNELS.get(o.name)
            scratch = 0 if kernel is None else _aligned(
                kernel.scratch_words(kernel.problem(o), tiling(o)))
            if scratch:
                scratch_addr = temps.alloc(scratch)
                set_scratch_addr(o, scratch_addr)
            for operand in {_storage(x) for x in o.operands} - {in_place}:
                owner = operand.owner
                if (last_use.get(operand) == index and operand not in outputs
                        and owner is not block and not isinstance(owner, ParamOp)):
                    temps.release(dram_addr_of_op(owner), _words(operand))
            if scratch:
                temps.release(scratch_addr, scratch)
        for o in ops:
            if isinstance(o, ReshapeOp):
                set_dram_addr(o, dram_addr(_storage(o.result), func))
        words = max(temps.top, DRAM_ALIGN)
        set_dram_words(op, words)
        check_dram_fits(op, words)


def check_dram_fits(module: ModuleOp, words: int) -> None:
    """DramFitError if the module's target (when it has one) has fewer than `words` DRAM
    words."""
    name = module_target(module)
    if name is None:
        return
    target = cached_target(name)
    if words > target.dram_words:
        raise DramFitError(
            f"the program needs {words} DRAM words ({words * 4 / 2**20:.2f} MiB: weights, "
            f"inputs, outputs and intermediates) but target '{target.name}' has "
            f"{target.dram_words} ({target.dram_words * 4 / 2**20:.2f} MiB)")
