"""The backend's last step: an isa-level module -> `Program` (what prog.bin holds).

Instructions come from the isa ops in order; constants from the `isa.buffer` records of
kind "const", whose values are read by parameter name from the model file (`nm.model`)
and stored in the layout the kernels asked for; symbols from the input/output records;
the debug section from the `layer` attribute of consecutive instructions.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from nmc.compiler.frontend.weights import load_weights
from nmc.compiler.dialects.nm import MODEL_ATTR
from nmc.compiler.transforms.lower_nm_to_isa import (
    LAYER_KINDS_ATTR, TARGET_ID_ATTR, TARGET_NAME_ATTR,
)
from nmc.compiler.transforms.plan_memory import DRAM_WORDS_ATTR
from nmc.isa.container import LayerRange, Program, Symbol
from nmc.isa.dialect import BufferOp, is_instruction_op, op_to_instr

LAYOUTS = {
    "identity": lambda a: a,
    "transpose": lambda a: a.T,
}


def _layer_ranges(layers: list[str | None], kinds: dict[str, str]) -> list[LayerRange]:
    ranges, start = [], 0
    for pc in range(1, len(layers) + 1):
        if pc == len(layers) or layers[pc] != layers[start]:
            if layers[start] is not None:
                ranges.append(LayerRange(layers[start], kinds.get(layers[start], ""), start, pc))
            start = pc
    return ranges


def module_to_program(module: ModuleOp, meta: dict | None = None,
                      weights: Mapping[str, np.ndarray] | None = None) -> Program:
    """`weights` (parameter name -> array) defaults to the tensors of the model file the
    module names (`nm.model`); tests that build nm IR by hand pass their own."""
    attrs = module.attributes
    if weights is None:
        weights = load_weights(attrs[MODEL_ATTR].data)
    kinds = {k: v.data for k, v in attrs[LAYER_KINDS_ATTR].data.items()}

    instructions, layers, constants, symbols = [], [], [], []
    for op in module.body.block.ops:
        if is_instruction_op(op):
            instructions.append(op_to_instr(op))
            layer = op.attributes.get("layer") or op.properties.get("layer")
            layers.append(layer.data if layer is not None else None)
        elif isinstance(op, BufferOp):
            info = op.info()
            if info.kind == "const":
                data = LAYOUTS[info.layout](weights[info.param])
                constants.append((info.addr, np.ascontiguousarray(data, np.float32).ravel()))
            elif info.kind in ("input", "output"):
                symbols.append(Symbol(info.name, info.kind, tuple(info.shape), "f32", info.addr))

    return Program(
        target_name=attrs[TARGET_NAME_ATTR].data,
        target_id=attrs[TARGET_ID_ATTR].value.data,
        dram_words=attrs[DRAM_WORDS_ATTR].value.data,
        instructions=instructions,
        constants=constants,
        symbols=symbols,
        debug=_layer_ranges(layers, kinds),
        meta=meta or {},
    )
