"""LayerNorm over the last dim as torch-mlir's ONNX conversion gives it -> nm.layer_norm.

    native_layer_norm(x, [C], gamma, beta, eps)    (ONNX LayerNormalization; its mean and
                                                     rstd results unused)
"""

from __future__ import annotations

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group, Mapper, Matcher, anchored_by
from nmc.compiler.transforms.raise_torch_to_nm.reading import Reject, const, shape, verified


def match(op: tt.AtenNativeLayerNormOp) -> Group:
    verified(op)
    x = shape(op.input)
    if op.mean.uses or op.rstd.uses:
        raise Reject("the mean and rstd results of native_layer_norm are not supported")
    normalized = const(op.normalized_shape, "normalized_shape")
    if not x or normalized != [x[-1]]:
        raise Reject(f"normalized_shape must be the last dim [{x[-1] if x else '?'}], got "
                     f"{normalized}")
    for label, v in (("weight", op.weight), ("bias", op.bias)):
        if isinstance(v.type, tt.NoneType):
            raise Reject(f"layer_norm without {label} (elementwise_affine=False) is not "
                         f"supported")
        if shape(v) != (x[-1],):
            raise Reject(f"the layer_norm {label} must be [{x[-1]}], got {list(shape(v))}")
    eps = const(op.eps, "eps")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool):
        raise Reject(f"eps must be a float constant, got {eps!r}")
    inp, weight, bias = op.input, op.weight, op.bias

    def build(v: Mapper, layer: str) -> nm.LayerNormOp:
        return nm.LayerNormOp(v(inp), v(weight), v(bias), float(eps), layer)

    return Group(nm.LayerNormOp.KIND, (op,), op, build, op)


MATCHER = Matcher("layer_norm (native)", anchored_by(tt.AtenNativeLayerNormOp), match)
