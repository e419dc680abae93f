"""quantize: the int8 scales of the matmuls of a model compiled for an int8 target.

On a target whose matrix unit takes int8 operands (`Target.int8`, sta_int8), every
nm.linear and nm.patch_embed whose weight is a parameter and whose reduction and output
dimensions are multiples of 4 (int8 packs four to a word) is computed in int8
(docs/INT8.md): it gets `nm.quant` (the input's scale per tensor, the weight's per output
channel) and its weight the layout element type i8 (`#nm.layout<transpose, i8>`; an N:M
pattern keeps it through prune-and-pack). Everything else stays fp32: attention,
LayerNorm, GELU, softmax, and a linear of other dimensions (a 10-class head).

Scales come from calibration (`calib`: a .npy of inputs; s_x = max |x| / 127 over them,
or the clip another `observer` chooses, nmc.common.observer; measured on the input of each
quantized op by interpreting this nm IR, N:M masks included, as the ELSA sensitivity
does) or from a file (`quant`: the JSON `out` writes,
`{"layers": {"blocks.0.attn.qkv": {"input_scale": s, "weight_scales": [...]}}}`, keyed
by the module path of the layer's weight), or from the model itself: a PT2E-quantized
model carries them (module attribute `nm.model_scales`, by weight name, written by the
frontend: compiler/frontend/pt2e.py); its int8 layers are those it quantized that nmc
can run in int8, and --calib / --quant are refused. Weight scales are computed from the
(masked) weight unless the file or the model gives them. On an fp32 target the pass does
nothing, and refuses `calib` / `quant` (they would be silently ignored).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp

from nmc.common import nm_format, quant
from nmc.common.errors import NmcError
from nmc.common.observer import Observer, parse_observer
from nmc.compiler.dialects.nm import LinearOp, ParamOp, PatchEmbedOp, tensor_shape
from nmc.compiler.dialects.nm_attrs import (
    I8, TRANSPOSE, LayoutAttr, input_names, model_scales, module_target, set_layout,
    set_quant,
)
from nmc.compiler.frontend.weights import weights_of_module
from nmc.compiler.kernels.int8 import int8_shape
from nmc.compiler.transforms.target_option import TargetedPass, cached_target
from nmc.isa.target import DEFAULT_TARGET


class QuantError(NmcError):
    """Missing or unusable calibration, or a scales file that does not fit the model."""


def quantizable_ops(module: ModuleOp) -> list:
    """The ops an int8 target computes in int8 (module docstring), in program order."""
    out = []
    for op in module.walk():
        if not isinstance(op, (LinearOp, PatchEmbedOp)):
            continue
        if not isinstance(op.weight.owner, ParamOp):
            continue
        w = tensor_shape(op.weight)
        if int8_shape(int(np.prod(w[1:])), w[0]):
            out.append(op)
    return out


def layer_key(op) -> str:
    """The key of an op in a scales file: its weight's module path (`blocks.0.attn.qkv`
    for `blocks.0.attn.qkv.weight`)."""
    name = op.weight.owner.param_name.data
    return name[: -len(".weight")] if name.endswith(".weight") else name


def _masked_weight(op, weights) -> np.ndarray:
    w = np.asarray(weights[op.weight.owner.param_name.data], np.float32)
    w = w.reshape(len(w), -1)
    pattern = op.sparsity_pattern if isinstance(op, LinearOp) else None
    if pattern is not None:
        w = w * nm_format.nm_mask(w, *pattern)
    return w


def calibrate(module: ModuleOp, ops: list, calib: str,
              observer: Observer = Observer()) -> dict[str, float]:
    """s_x of every op in `ops`: the clip `observer` chooses from |input| over the
    calibration inputs (max |x| by default), / 127."""
    import torch

    from nmc.compiler.interpret import interpret
    from nmc.compiler.sparsity.sensitivity import load_calibration

    func = next(o for o in module.walk() if isinstance(o, FuncOp))
    if len(func.body.block.args) != 1:
        raise QuantError("int8 calibration needs a model with exactly one input")
    inputs = load_calibration(calib, tensor_shape(func.body.block.args[0]))
    wanted = {id(op): layer_key(op) for op in ops}
    seen = {key: observer.collector() for key in wanted.values()}

    def observe(op, operands) -> None:
        key = wanted.get(id(op))
        if key is not None:
            seen[key].update(operands[0].detach().numpy())

    weights = weights_of_module(module)
    name = input_names(func)[0]
    for x in inputs:
        interpret(module, {name: x.numpy()}, weights, observe)
    return {key: quant.input_scale(h.clip(observer)) for key, h in seen.items()}


def read_scales(path: str, ops: list) -> dict[str, dict]:
    """The scales file at `path`, checked against the model's quantized layers."""
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QuantError(f"--quant {path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise QuantError(f"--quant {path}: not a JSON scales file ({e})") from None
    layers = table.get("layers") if isinstance(table, dict) else None
    if not isinstance(layers, dict):
        raise QuantError(f'--quant {path}: expected {{"layers": {{layer: {{"input_scale": s, '
                         f'"weight_scales": [...]}}}}}}')
    check_scales(layers, ops, f"--quant {path}")
    return layers


def check_scales(layers: dict, ops: list, source: str) -> None:
    """Every op of `ops` has its scales in `layers` (by `layer_key`), none is extra, and
    each is usable: a finite positive input scale, one weight scale per output channel."""
    keys = {layer_key(op): op for op in ops}
    extra = sorted(set(layers) - set(keys))
    missing = [k for k in keys if k not in layers]
    if extra or missing:
        what = (f"layer '{extra[0]}' is not an int8 layer of this model" if extra
                else f"no scales for layer '{missing[0]}'")
        raise QuantError(f"{source}: {what} (its int8 layers: {', '.join(keys)})")
    for key, op in keys.items():
        entry = layers[key]
        channels = tensor_shape(op.weight)[0]
        if not isinstance(entry, dict) or not quant.check_scale(entry.get("input_scale")):
            raise QuantError(f"{source}: layer '{key}': input_scale must be a finite "
                             f"positive number")
        s_w = entry.get("weight_scales")
        if s_w is not None and (not isinstance(s_w, list) or len(s_w) != channels
                                or not all(quant.check_scale(s) for s in s_w)):
            raise QuantError(f"{source}: layer '{key}': weight_scales must be "
                             f"{channels} finite positive numbers (one per output channel)")


def scales_of_model(module: ModuleOp, ops: list) -> tuple[list, dict[str, dict]]:
    """(the int8 ops, their scales) of a model that carries its own (`nm.model_scales`:
    a PT2E-quantized model), in the form `read_scales` returns. A layer the model
    quantized that nmc computes in fp32 (K or N not a multiple of 4) stays fp32, as one it
    did not quantize does."""
    table = model_scales(module)
    readers = {o.weight.owner.param_name.data for o in module.walk()
               if isinstance(o, (LinearOp, PatchEmbedOp)) and isinstance(o.weight.owner, ParamOp)}
    unknown = sorted(set(table) - readers)
    if unknown:
        raise QuantError(f"nm.model_scales: no linear or patch embedding has the weight "
                         f"'{unknown[0]}'")
    chosen = [o for o in ops if o.weight.owner.param_name.data in table]
    given = {}
    for o in chosen:
        s_x, s_w = table[o.weight.owner.param_name.data]
        given[layer_key(o)] = {"input_scale": s_x, "weight_scales": s_w}
    check_scales(given, chosen, "the model's int8 scales (PT2E)")
    return chosen, given


def scales_json(entries: dict[str, dict]) -> str:
    return json.dumps({"layers": entries}, indent=1) + "\n"


@dataclass(frozen=True)
class Quantize(TargetedPass):
    """Choose int8 scales for an int8 target (calib=FILE.npy or quant=FILE.json)."""

    name = "quantize"

    calib: str = ""
    quant: str = ""
    out: str = ""
    observer: str = "max"  # how `calib` chooses input scales (nmc.common.observer)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        self.check_target(op)
        target = cached_target(module_target(op) or self.target or DEFAULT_TARGET)
        if not target.int8:
            if self.calib or self.quant or self.out:
                raise QuantError(
                    f"--calib/--quant/--quant-out: target '{target.name}' computes in fp32; "
                    f"int8 needs a target whose matrix unit takes int8 (sta_int8)")
            return
        self.target_for(op)
        ops = quantizable_ops(op)
        if model_scales(op):
            if self.quant:  # --calib may still feed an ELSA / SparseViT search
                raise QuantError("--quant: the model carries its own int8 scales (it was "
                                 "quantized with PT2E); nmc compiles with those")
            ops, given = scales_of_model(op, ops)
            inputs = {k: float(v["input_scale"]) for k, v in given.items()}
        elif self.quant:
            given = read_scales(self.quant, ops)
            inputs = {k: float(v["input_scale"]) for k, v in given.items()}
        elif self.calib:
            given, inputs = {}, calibrate(op, ops, self.calib, parse_observer(self.observer))
        else:
            raise QuantError(f"target '{target.name}' computes in int8: give calibration "
                             f"inputs (--calib X.npy) or scales (--quant q.json)")
        entries = {}
        for o in ops:
            key = layer_key(o)
            s_w = given.get(key, {}).get("weight_scales")
            if s_w is None:  # the weights are read only when a scale must be computed
                s_w = quant.weight_scales(_masked_weight(o, weights_of_module(op))).tolist()
            set_quant(o, inputs[key], s_w)
            set_layout(o.weight.owner, LayoutAttr(TRANSPOSE, element_type=I8))
            entries[key] = {"input_scale": inputs[key], "weight_scales": [float(s) for s in s_w]}
        if self.out:
            from nmc.common.fileio import atomic_write_text

            atomic_write_text(self.out, scales_json(entries))
