"""lower-nm-to-isa: replace the nm function by the accelerator's instruction stream.

Each compute op becomes its kernel's instructions (compiler/kernels/), in program order,
each an `isa.<mnemonic>` op whose `layer` attribute names the nm op it came from. DRAM
allocations become `isa.buffer` records (parameters as "const" with their layout, inputs,
outputs, and intermediates as "temp"), and the stream ends with `isa.halt`. Tokens are
left at zero: `insert-tokens` derives them.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.passes import ModulePass

from nmc.compiler.dialects.nm import (
    INPUT_NAMES_ATTR, OUTPUT_NAMES_ATTR, ParamOp, _ComputeOp, tensor_shape,
)
from nmc.compiler.kernels.common import SCRATCH_ATTR
from nmc.compiler.kernels.registry import KERNELS, scratch_of
from nmc.compiler.kernels.linear import nm_packed_shape
from nmc.compiler.transforms.plan_memory import LAYOUT_ATTR, address_of
from nmc.compiler.transforms.prune_and_pack import parse_nm_pack
from nmc.compiler.transforms.schedule_tiles import tiling_of
from nmc.compiler.transforms.target_option import DEFAULT_TARGET, TARGET_ATTR, cached_target
from nmc.isa.dialect import BufferOp, instr_to_op
from nmc.isa.table import Instr

TARGET_NAME_ATTR = "isa.target"
TARGET_ID_ATTR = "isa.target_id"
LAYER_KINDS_ATTR = "nm.layer_kinds"
LAYER_WEIGHTS_ATTR = "nm.layer_weights"  # linear layer -> its weight's parameter name


def _names(func: FuncOp, attr: str) -> list[str]:
    return [s.data for s in func.attributes[attr].data]


@dataclass(frozen=True)
class LowerNmToIsa(ModulePass):
    name = "lower-nm-to-isa"

    target: str = DEFAULT_TARGET

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target = cached_target(op.attributes[TARGET_ATTR].data if TARGET_ATTR in op.attributes
                               else self.target)
        func = next(o for o in op.walk() if isinstance(o, FuncOp))
        block = func.body.block
        ret = next(o for o in block.ops if isinstance(o, ReturnOp))

        def addr(value):
            return address_of(value, func)

        records = []
        for o in block.ops:
            if isinstance(o, ParamOp):
                shape = tensor_shape(o.result)
                layout = o.attributes[LAYOUT_ATTR].data
                stored = shape[::-1] if layout == "transpose" else shape
                pattern = parse_nm_pack(layout)
                if pattern is not None:  # W^T packed: value rows then index-word rows
                    stored = nm_packed_shape(shape[1], shape[0], pattern)
                records.append(BufferOp(o.param_name.data, "const", addr(o.result), stored,
                                              param=o.param_name.data, layout=layout))
        for name, arg in zip(_names(func, INPUT_NAMES_ATTR), block.args):
            records.append(BufferOp(name, "input", addr(arg), tensor_shape(arg)))
        for name, value in zip(_names(func, OUTPUT_NAMES_ATTR), ret.operands):
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
            if SCRATCH_ATTR in o.attributes:
                records.append(BufferOp(
                    f"{o.layer_name}.scratch", "temp", scratch_of(o),
                    (kernel.scratch_words(o),)))
            kinds[o.layer_name] = StringAttr(o.KIND)
            if o.name == "nm.linear" and isinstance(o.operands[1].owner, ParamOp):
                weights[o.layer_name] = StringAttr(o.operands[1].owner.param_name.data)
            for instr in kernel.emit(o, tiling_of(o), addr, target):
                stream.append(instr_to_op(instr, o.layer_name))
        stream.append(instr_to_op(Instr.make("halt")))

        func.detach()
        func.erase()
        op.body.block.add_ops(records + stream)
        op.attributes[TARGET_NAME_ATTR] = StringAttr(target.name)
        op.attributes[TARGET_ID_ATTR] = IntegerAttr(target.id, i64)
        op.attributes[LAYER_KINDS_ATTR] = DictionaryAttr(kinds)
        op.attributes[LAYER_WEIGHTS_ATTR] = DictionaryAttr(weights)
