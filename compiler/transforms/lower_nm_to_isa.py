"""lower-nm-to-isa: replace the nm function by the accelerator's instruction stream.

Each compute op becomes its kernel's instructions (compiler/kernels/), in program order,
each an `isa.<mnemonic>` op whose `layer` attribute names the nm op it came from. DRAM
allocations become `isa.buffer` records (parameters as "const" with their layout, inputs,
outputs, and intermediates as "temp"), and the stream ends with `isa.halt`. Tokens are
left at zero: `insert-tokens` derives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp, ReturnOp

from nmc.common import nm_format
from nmc.compiler.dialects.nm import LinearOp, ParamOp, _ComputeOp, tensor_shape
from nmc.compiler.dialects.nm_attrs import (
    TRANSPOSE, ProgramRecord, dram_addr, has_scratch, input_names, layout, output_names,
    quant, scratch_addr, set_program_record, tiling,
)
from nmc.compiler.kernels import int8
from nmc.compiler.kernels.kernel import Buffers
from nmc.compiler.kernels.registry import KERNELS
from nmc.compiler.transforms.target_option import TargetedPass
from nmc.isa.dialect import BufferOp, instr_to_op
from nmc.isa.table import Instr


@dataclass(frozen=True)
class LowerNmToIsa(TargetedPass):
    name = "lower-nm-to-isa"


    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target = self.target_for(op)
        func = next(o for o in op.walk() if isinstance(o, FuncOp))
        block = func.body.block
        ret = next(o for o in block.ops if isinstance(o, ReturnOp))

        def addr(value):
            return dram_addr(value, func)

        records = []
        for o in block.ops:
            if isinstance(o, ParamOp):
                shape = tensor_shape(o.result)
                stored_as = layout(o)
                if stored_as is None:
                    raise ValueError(f"nm.param {o.param_name.data} has no layout: run "
                                     f"plan-memory first")
                if stored_as.int8:
                    records.append(_int8_weight_record(o, stored_as, addr(o.result)))
                    continue
                stored = shape[::-1] if stored_as.kind.data == TRANSPOSE else shape
                if stored_as.pattern is not None:  # W^T packed: value rows then index-word rows
                    stored = nm_format.packed_shape(shape[1], shape[0], stored_as.pattern)
                records.append(BufferOp(o.param_name.data, "const", addr(o.result), stored,
                                              param=o.param_name.data, layout=stored_as.text))
        for name, arg in zip(input_names(func), block.args):
            records.append(BufferOp(name, "input", addr(arg), tensor_shape(arg)))
        for name, value in zip(output_names(func), ret.operands):
            records.append(BufferOp(name, "output", addr(value), tensor_shape(value)))

        stream, kinds, weights = [], {}, {}
        for o in block.ops:
            if not isinstance(o, _ComputeOp):
                continue
            kernel = KERNELS.get(o.name)
            if kernel is None:
                raise ValueError(f"no kernel for {o.name} ({o.layer_name})")
            if o.results[0] not in ret.operands:
                records.append(BufferOp(o.layer_name, "temp", addr(o.results[0]),
                                              tensor_shape(o.results[0])))
            problem, sizes, scratch = kernel.problem(o), tiling(o), None
            if has_scratch(o):
                scratch = scratch_addr(o)
                records.append(BufferOp(
                    f"{o.layer_name}.scratch", "temp", scratch,
                    (kernel.scratch_words(problem, sizes),)))
            kinds[o.layer_name] = o.KIND
            if isinstance(o, LinearOp) and isinstance(o.weight.owner, ParamOp):
                weights[o.layer_name] = o.weight.owner.param_name.data
            for instr in kernel.emit(problem, sizes, Buffers.of(o, addr, scratch), target):
                stream.append(instr_to_op(instr, o.layer_name))
        stream.append(instr_to_op(Instr.make("halt")))

        func.detach()
        func.erase()
        op.body.block.add_ops(records + stream)
        set_program_record(op, ProgramRecord(target.name, target.id, kinds, weights))


def _int8_weight_record(param: ParamOp, stored_as, address: int) -> BufferOp:
    """The const record of an int8 weight (kernels/int8.py): its words, and what the
    emitter needs besides the fp32 weight: the bias parameter and the op's scales."""
    users = [u.operation for u in param.result.uses if quant(u.operation) is not None]
    if len(users) != 1 or len(list(param.result.uses)) != 1:
        raise ValueError(f"int8 weight {param.param_name.data} must be read by exactly one "
                         f"quantized op")
    user = users[0]
    s_x, s_w = quant(user)
    bias = user.bias
    if bias is not None and not isinstance(bias.owner, ParamOp):
        raise ValueError(f"int8 layer {user.layer_name}: its bias is not a parameter")
    shape = tensor_shape(param.result)
    words = int8.stored_words(shape[0], int(prod(shape[1:])), stored_as.pattern)
    return BufferOp(param.param_name.data, "const", address, (words,),
                    param=param.param_name.data, layout=stored_as.text,
                    bias=bias.owner.param_name.data if bias is not None else None,
                    scales=(s_x, *s_w))
