"""The backend's last step: an isa-level module -> `Program` (what prog.bin holds).

Instructions come from the isa ops in order; constants from the `isa.buffer` records of
kind "const", whose values are read by parameter name from the module's weight store (the
frontend's, `nmc.compiler.frontend.weights`) and stored in the layout the kernels asked
for; symbols from the input/output records; the debug section from the `layer` attribute
of consecutive instructions.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from nmc.common import nm_format, quant
from nmc.compiler.errors import FrontendError
from nmc.compiler.frontend.weights import weights_of_module
from nmc.compiler.dialects.nm_attrs import dram_words, program_record, window_keep
from nmc.isa.container import LayerRange, Program, Symbol
from nmc.isa.dialect import BufferInfo, BufferOp, is_instruction_op, op_to_instr

LAYOUTS = {
    "identity": lambda a: a,
    "transpose": lambda a: a.T,
}


def apply_layout(layout: str, weight: np.ndarray) -> np.ndarray:
    """A parameter stored in `layout` (LAYOUTS, or `nm_pack:N:M`: `nm_format.pack`)."""
    fn = LAYOUTS.get(layout)
    if fn is not None:
        return fn(weight)
    pattern = nm_format.parse_layout(layout)
    if pattern is None:
        raise ValueError(f"unknown layout '{layout}'")
    return nm_format.pack(weight, *pattern)


def int8_weight(info: BufferInfo, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """The words of an int8 weight buffer (compiler/kernels/int8.py, docs/INT8.md): the
    int8 W^T (dense or N:M packed) quantised per output channel, then the rescale table
    of the int32 bias and the scales."""
    base, _ = nm_format.split_element(info.layout)
    pattern = nm_format.parse_layout(base)
    weight = np.asarray(weights[info.param], np.float32)
    w = weight.reshape(len(weight), -1)
    s_x, s_w = info.scales[0], np.asarray(info.scales[1:], np.float32)
    masked = w * nm_format.nm_mask(w, *pattern) if pattern is not None else w
    q = quant.quantize_weight(masked, s_w)
    bias = weights[info.bias] if info.bias is not None else None
    return np.concatenate([nm_format.pack_int8(w, q, pattern),
                           quant.rescale_table(bias, s_x, s_w)])


def _layer_meta(layer_weights: dict[str, str], buffers: dict[str, tuple[str, tuple[int, ...]]],
                weights: Mapping[str, np.ndarray]) -> dict:
    """Per linear layer: its weight's pattern, density and bytes in DRAM (META "layers")."""
    layers = {}
    for layer, param in layer_weights.items():
        if param not in buffers:
            continue
        layout, stored = buffers[param]
        dense = int(np.prod(np.shape(weights[param]))) if param in weights else 0
        base, element = nm_format.split_element(layout)
        pattern = nm_format.parse_layout(base)
        layers[layer] = {
            "pattern": nm_format.pattern_text(pattern),
            "density": nm_format.density(pattern),
            "weight_bytes": int(np.prod(stored)) * 4,
            "dense_bytes": dense * nm_format.ELEMENT_BYTES[element],
        }
        if element != "f32":  # int8: the words hold the int8 weight and the rescale table
            layers[layer]["element"] = element
            rows = np.shape(weights[param])[0]
            layers[layer]["weight_bytes"] -= 2 * rows * 4
    return layers


def _layer_ranges(layers: list[str | None], kinds: dict[str, str]) -> list[LayerRange]:
    ranges, start = [], 0
    for pc in range(1, len(layers) + 1):
        if pc == len(layers) or layers[pc] != layers[start]:
            if layers[start] is not None:
                ranges.append(LayerRange(layers[start], kinds.get(layers[start], ""), start, pc))
            start = pc
    return ranges


def module_to_program(module: ModuleOp, meta: dict | None = None) -> Program:
    """The program of an isa-level module; parameter values come from the module's weight
    store (`weights_of_module`)."""
    record = program_record(module)
    weights = weights_of_module(module)
    if weights is None:
        raise FrontendError("the module has no weights: no weight store was attached and it "
                            "names no model file (nm.model)")

    instructions, layers, constants, symbols = [], [], [], []
    buffers: dict[str, tuple[str, tuple[int, ...]]] = {}
    for op in module.body.block.ops:
        if is_instruction_op(op):
            instructions.append(op_to_instr(op))
            layer = op.attributes.get("layer") or op.properties.get("layer")
            layers.append(layer.data if layer is not None else None)
        elif isinstance(op, BufferOp):
            info = op.info()
            if info.kind == "const":
                if nm_format.split_element(info.layout)[1] == "i8":
                    data = int8_weight(info, weights)
                else:
                    data = apply_layout(info.layout, weights[info.param])
                constants.append((info.addr, np.ascontiguousarray(data, np.float32).ravel()))
                buffers[info.param] = (info.layout, tuple(info.shape))
            elif info.kind in ("input", "output"):
                symbols.append(Symbol(info.name, info.kind, tuple(info.shape), "f32", info.addr))

    return Program(
        target_name=record.target_name,
        target_id=record.target_id,
        dram_words=dram_words(module),
        instructions=instructions,
        constants=constants,
        symbols=symbols,
        debug=_layer_ranges(layers, record.layer_kinds),
        meta=_with_window_keep(
            _with_layers(meta, _layer_meta(record.layer_weights, buffers, weights)), module),
    )


def _with_window_keep(meta: dict, module: ModuleOp) -> dict:
    ratios = window_keep(module)
    if ratios is not None:
        meta.setdefault("window_keep", ratios)
    return meta


def _with_layers(meta: dict | None, layers: dict) -> dict:
    meta = dict(meta or {})
    if layers:
        meta.setdefault("layers", layers)
    return meta
