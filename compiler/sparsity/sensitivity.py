"""Per-layer sensitivity: the model-output error that one (layer, pattern) choice causes
alone, with only that layer's weight masked (`nm_mask`, keep the N largest |w| of every M
along the input dimension):

    error = ||y_masked - y|| / ||y||   (Frobenius norms over all calibration outputs)

How it is computed (issue 5). The direct form, a full forward pass per layer, pattern and
calibration input, took 50 s on DeiT-small on an idle 2-core machine (480 forwards) and
~200 s on a busy one; now ~10 s:

1. One run of the model per calibration input (a `torch.fx.Interpreter` over the exported
   graph) keeps every node's value and so the input X of every linear layer (an
   `aten.linear` whose weight is a `get_attr`).
2. The layer-local error of a pattern, local(p) = ||X (W_p - W)^T||, is one matmul.
3. The exact model-output error of one *probe* pattern per layer (the one of largest
   local error): the graph re-run with the weight masked, recomputing only the nodes that
   depend on the weight (the others keep step 1's values; about half a forward on
   average; past KEEP_BYTES of kept values, full forwards).
4. Every other pattern's error is the probe's scaled by the local errors:
   error(p) = error(probe) * local(p) / local(probe).

Step 4 is a first-order (linearised) propagation: the output error of a small change dY of
one layer's output is ~||J dY||, with J the Jacobian of the rest of the network, and we
assume J amplifies the changes of the different patterns of one layer alike (on DeiT-small
the scaled errors are within ~12% of the exact ones, the probe's exact). What the search
needs is kept: errors are still model-output errors, so a layer whose output matters more
downstream (larger weights, a residual branch that dominates) is still seen as more
sensitive, which a purely local error would miss. A layer whose input cannot be captured
(its weight reaches the matmul through another op) falls back to the exact error of every
pattern; a layer whose every pattern keeps its weights unchanged (local errors all 0)
costs no forward at all. torch runs on the cores not already busy (`_free_cores`).

Calibration inputs: `--calib FILE.npy` holds one input of the model's input shape, or a
stack of them ([n, *input shape]); by default two fixed-seed inputs: for an image model
([B, 3, H, H]) the demo image (`nmc.common.images.demo_image`) and a random normal one,
otherwise two random normal tensors. Results are cached per process by (model, calibration
inputs, layer, pattern).

On an int8 target (`int8`: the layers the quantize pass makes int8, int8_run.py) the model
runs with those layers in int8, the contract of docs/INT8.md: the reference outputs, the
masked runs and the local errors are all the quantized model's (input scales calibrated
on the same calibration inputs with the quantize pass's observer, max |x| / 127 by
default, in the fp32 model, or a PT2E model's or a --quant file's own; weight scales of
the masked weight, as the compiler quantises a sparse layer, unless the file gives them).

The model is the one the frontend loaded (the module's weight store,
`nmc.compiler.frontend.weights`): its program as exported, run by `torch.fx`. Masking a
weight swaps in a masked copy for the run; the store's tensors are never modified.

Over a Dask cluster (`nmc compile --workers N`), the layers are measured in chunks on the
workers (`remote`): each gets the program (torch.export's bytes), the calibration inputs
and the int8 layers once, builds its own `Sensitivity` (the reference runs again there)
and measures its layers with the same code as here.

Whole configurations (`joint_error`, what `--sparsity elsa:...,rank=joint` ranks by): the
same error with every chosen layer masked at once, full runs of the model; the errors of
many layers do not add up (their sum overstates it, several times over on a pretrained
ViT), so the sum of single-layer errors can rank two configurations the wrong way round.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch

from nmc.common import nm_format
from nmc.common.nm_format import Pattern
from nmc.common.observer import Observer
from nmc.common.threads import torch_threads
from nmc.compiler.sparsity.spec import SparsityError

if TYPE_CHECKING:
    from nmc.common.cluster import Remote
    from nmc.compiler.frontend.weights import WeightStore
    from nmc.compiler.sparsity.int8_run import Int8Layers

_CACHE: dict[tuple, list[float]] = {}

KEEP_BYTES = 2 << 30
"""The node values kept for partial re-runs (DeiT-base: ~0.2 GB per calibration input)."""


def clear_cache() -> None:
    """Forget the measured sensitivities (a benchmark timing the search from scratch)."""
    _CACHE.clear()


def load_calibration(calib: str, input_shape: tuple[int, ...]) -> list[torch.Tensor]:
    """The calibration inputs (each of `input_shape`)."""
    shape = tuple(input_shape)
    if calib:
        try:
            arr = np.load(calib, allow_pickle=False)
        except FileNotFoundError:
            raise SparsityError(f"--calib {calib}: file not found") from None
        except (OSError, ValueError, EOFError) as e:
            raise SparsityError(f"--calib {calib}: cannot read it as .npy ("
                                f"{getattr(e, 'strerror', None) or str(e).splitlines()[0]})") \
                from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
            raise SparsityError(f"--calib {calib}: expected a numeric array, got dtype "
                                f"{getattr(arr, 'dtype', '?')}")
        if tuple(arr.shape) == shape:
            arr = arr[None]
        if tuple(arr.shape[1:]) != shape or arr.shape[0] == 0:
            raise SparsityError(f"--calib {calib}: shape {tuple(arr.shape)}; expected the "
                                f"model's input shape {shape} or a stack [n, *{shape}]")
        if not np.all(np.isfinite(arr)):
            raise SparsityError(f"--calib {calib}: holds NaN or infinite values")
        return [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arr]
    gen = torch.Generator().manual_seed(0)
    inputs = []
    if len(shape) == 4 and shape[1] == 3 and shape[2] == shape[3]:
        from nmc.common.images import demo_image

        image, _ = demo_image(shape[2])
        inputs.append(image.expand(shape).contiguous())
    while len(inputs) < 2:
        inputs.append(torch.randn(shape, generator=gen))
    return inputs


class Sensitivity:
    """Measures errors on the exported model; `errors(layer_param, patterns)`."""

    def __init__(self, weights: WeightStore, calib: str | list[torch.Tensor],
                 input_shape: tuple[int, ...], int8: Int8Layers | None = None,
                 observer: Observer = Observer(), keep: bool = True):
        """`calib`: a --calib file (`load_calibration`, inputs of `input_shape`), or the
        calibration inputs themselves. `int8`: the layers an int8 target computes in int8
        (`int8_run`): errors are then those of the quantized model, its missing input
        scales calibrated with `observer` (nmc.common.observer) as the quantize pass
        calibrates. `keep`: keep the reference runs' node values and layer inputs, what
        `errors` computes fast from (`joint_error` needs none: without them `errors`
        takes full forwards)."""
        self.model_name = weights.name
        self.module = weights.program().module()
        self.inputs = load_calibration(calib, input_shape) if isinstance(calib, str) \
            else list(calib)
        digest = hashlib.sha1()
        for x in self.inputs:
            digest.update(x.numpy().tobytes())
        self.graph = self.module.graph
        # parameters, buffers and constants (a PT2E model's dequantized weights)
        self.params = {n.target: _attr(self.module, n.target) for n in self.graph.nodes
                       if n.op == "get_attr"}
        self.int8 = None if int8 is None else int8.calibrated(self._clips(int8, observer))
        self.key = (weights.key, digest.hexdigest(), repr(self.int8))
        self.envs: list[dict | None] = []  # every node's value per input, while they fit
        self.reference: list[torch.Tensor] = []
        self.linear_inputs: dict[str, list[torch.Tensor]] = {}
        self._masks: dict[tuple[str, Pattern], torch.Tensor] = {}
        kept = 0
        with torch_threads(_free_cores()), torch.no_grad():
            for x in self.inputs:
                run = self._run(garbage_collect_values=not keep)
                self.reference.extend(_flat(run.run(x)))
                if not keep:
                    self.envs.append(None)
                    continue
                for param, x_in in _linear_inputs(self.graph, run.env).items():
                    self.linear_inputs.setdefault(param, []).append(x_in)
                kept += _env_bytes(run.env)
                # past the budget, an input's masked runs are full forwards
                self.envs.append(run.env if kept <= KEEP_BYTES else None)
        self.ref_norm = float(torch.sqrt(sum((y.double() ** 2).sum() for y in self.reference)))

    def _run(self, **kwargs) -> torch.fx.Interpreter:
        """An interpreter of the model: in fp32, or with the int8 layers in int8."""
        if self.int8 is None:
            return torch.fx.Interpreter(self.module, **kwargs)
        from nmc.compiler.sparsity.int8_run import Int8Run

        return Int8Run(self.module, self.int8, **kwargs)

    def _clips(self, int8: Int8Layers, observer: Observer) -> dict[str, float]:
        """The clip `observer` chooses from |input| of every int8 layer over the
        calibration inputs, computed in fp32 (the quantize pass's calibration; a PT2E
        model's or a --quant file's scales need none)."""
        from nmc.compiler.sparsity.int8_run import Int8Run

        if all(s is not None for s in int8.input_scales.values()):
            return {}
        seen = {param: observer.collector() for param in int8.input_scales}
        with torch_threads(_free_cores()), torch.no_grad():
            for x in self.inputs:
                Int8Run(self.module, int8, seen).run(x)
        return {param: h.clip(observer) for param, h in seen.items()}

    def weight(self, param: str) -> torch.Tensor:
        w = self.params.get(param)
        if w is None:
            raise SparsityError(f"{self.model_name}: no parameter '{param}' to measure the "
                                f"sensitivity of")
        return w

    def errors(self, param: str, patterns: list[Pattern]) -> list[float]:
        """The model-output error of each of `patterns` (None or M:M: dense, 0.0) on the
        layer of weight `param`, as the module docstring describes."""
        key = (*self.key, param, tuple(patterns))
        hit = _CACHE.get(key)
        if hit is None:
            with torch_threads(_free_cores()), torch.no_grad():
                hit = _CACHE[key] = self._errors(param, patterns)
        return list(hit)

    def error(self, param: str, pattern: Pattern) -> float:
        """The exact model-output error of one pattern (the model re-run with the weight
        masked; only the part of the graph that depends on the weight is recomputed)."""
        if nm_format.is_dense(pattern):
            return 0.0
        with torch.no_grad():
            return self._relative_error(self._masked_outputs(param, pattern))

    def joint_error(self, config: Mapping[str, Pattern]) -> float:
        """The model-output error with every weight of `config` (parameter -> pattern)
        masked at once: what a whole configuration does, where `errors` measures each
        layer alone. Full runs of the model, one per calibration input; the masks are
        kept (a search asks for the same ones many times: one byte per weight and
        pattern)."""
        if all(nm_format.is_dense(pattern) for pattern in config.values()):
            return 0.0
        with ExitStack() as swaps, torch_threads(_free_cores()), torch.no_grad():
            for param, pattern in config.items():
                if not nm_format.is_dense(pattern):
                    w = self.weight(param)
                    swaps.enter_context(_swapped(self.module, param,
                                                 w * self._mask(param, pattern).to(w.dtype)))
            return self._relative_error([y for x in self.inputs
                                         for y in _flat(self._run().run(x))])

    def _mask(self, param: str, pattern: Pattern) -> torch.Tensor:
        """The N:M mask of a weight, kept for the next `joint_error`."""
        key = (param, pattern)
        if key not in self._masks:
            (self._masks[key],) = _masks(self.weight(param), [pattern])
        return self._masks[key]

    def _relative_error(self, outs: list[torch.Tensor]) -> float:
        """||outs - reference|| / ||reference|| over all calibration outputs."""
        diff = torch.sqrt(sum(((a.double() - b.double()) ** 2).sum()
                              for a, b in zip(outs, self.reference)))
        return float(diff) / max(self.ref_norm, 1e-30)

    def _errors(self, param: str, patterns: list[Pattern]) -> list[float]:
        w = self.weight(param)
        sparse = [i for i, p in enumerate(patterns) if not nm_format.is_dense(p)]
        out = [0.0] * len(patterns)
        xs = self.linear_inputs.get(param)
        if xs is None or w.dim() != 2:  # not captured: the exact form, pattern by pattern
            for i in sparse:
                out[i] = self.error(param, patterns[i])
            return out
        masks = _masks(w, [patterns[i] for i in sparse])
        local = {i: self._local_error(param, w, xs, mask) for i, mask in zip(sparse, masks)}
        probe = max(sparse, key=lambda i: local[i], default=None)
        if probe is None or local[probe] == 0.0:
            return out  # no pattern changes this layer's output
        exact = self.error(param, patterns[probe])
        for i in sparse:
            out[i] = exact * local[i] / local[probe]
        return out

    def _local_error(self, param: str, w: torch.Tensor, xs: list[torch.Tensor],
                     mask: torch.Tensor) -> float:
        """||layer(X; W masked) - layer(X; W)|| over the captured inputs X (step 2): in
        fp32 the product by the removed weights; an int8 layer's in int8, its weight
        scales following the mask (without the bias, which nearly cancels)."""
        if self.int8 is None or param not in self.int8.input_scales:
            return _local_error(w, xs, mask)
        masked = w.detach() * mask.to(w.dtype)
        return float(torch.sqrt(sum(
            ((self.int8.compute(param, x, masked, None) - self.int8.compute(param, x, w, None))
             .double() ** 2).sum() for x in xs)))

    def _masked_outputs(self, param: str, pattern: Pattern) -> list[torch.Tensor]:
        """The outputs with `param` masked by `pattern`: each input's graph re-run from the
        kept reference values of every node that does not depend on the weight."""
        w = self.weight(param)
        stale = _depends_on(self.graph, param)
        (mask,) = _masks(w, [pattern])
        with _swapped(self.module, param, w * mask.to(w.dtype)):
            outs = []
            for x, env in zip(self.inputs, self.envs):
                keep = {n: v for n, v in (env or {}).items() if n not in stale}
                outs.extend(_flat(self._run().run(x, initial_env=keep)))
            return outs


def measurer(weights: WeightStore, inputs: list[torch.Tensor], int8: Int8Layers | None,
             observer: Observer, joint: bool = False) -> Callable[[object], object]:
    """The scorer of `cluster.batch_scorer`, here and on a worker (`remote`): the errors
    of (weight parameter, patterns) items (`Sensitivity.errors`), or with `joint` the
    error of {weight parameter: pattern} configurations (`Sensitivity.joint_error`)."""
    sens = Sensitivity(weights, inputs, (), int8, observer, keep=not joint)
    return sens.joint_error if joint else lambda item: sens.errors(*item)


def remote(weights: WeightStore, inputs: list[torch.Tensor], int8: Int8Layers | None,
           observer: Observer, joint: bool = False) -> Remote:
    """What a Dask worker needs to build the `measurer` (`cluster.batch_scorer`): the
    program as torch.export writes it, the calibration inputs, the int8 layers."""
    from nmc.common.cluster import Remote

    program = io.BytesIO()
    torch.export.save(weights.program(), program)
    return Remote(_measurer_on_worker,
                  (weights.name, program.getvalue(), inputs, int8, observer, joint))


def _measurer_on_worker(payload) -> Callable[[object], object]:
    from nmc.compiler.frontend.pt2e import ensure_ops_registered
    from nmc.compiler.frontend.weights import WeightStore

    name, program, inputs, int8, observer, joint = payload
    ensure_ops_registered()  # a PT2E model's quantized_decomposed ops
    return measurer(WeightStore.from_program(torch.export.load(io.BytesIO(program)), name),
                    inputs, int8, observer, joint)


@contextmanager
def _swapped(module: torch.nn.Module, name: str, value: torch.Tensor) -> Iterator[None]:
    """`module`'s parameter or buffer `name` is `value` inside the block. A swap, not an
    in-place write: the tensor is the weight store's, shared with the compiler."""
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    original = getattr(owner, attr)
    if isinstance(original, torch.nn.Parameter):
        value = torch.nn.Parameter(value, requires_grad=original.requires_grad)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, original)


def _attr(module: torch.nn.Module, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    return getattr(module.get_submodule(owner), name)


def _flat(y) -> list[torch.Tensor]:
    return [t.detach() for t in (y if isinstance(y, (tuple, list)) else [y])]


def _depends_on(graph: torch.fx.Graph, param: str) -> set:
    """The nodes whose value depends on the parameter `param` (its get_attr nodes, their
    users, transitively), and the output node."""
    stale = {n for n in graph.nodes if n.op == "get_attr" and n.target == param}
    for n in graph.nodes:  # topological order: users come after their inputs
        if n.op == "output" or any(a in stale for a in n.all_input_nodes):
            stale.add(n)
    return stale


def _linear_inputs(graph: torch.fx.Graph, env: dict) -> dict[str, torch.Tensor]:
    """{weight parameter: its layer's input X in `env` (one run's node values), as
    [rows x K]} for every `aten.linear` whose weight is a get_attr (step 1). A weight
    shared by several linears gets their inputs stacked."""
    found: dict[str, list[torch.Tensor]] = {}
    for n in graph.nodes:
        if n.op != "call_function" or n.target not in _LINEAR_OPS or len(n.args) < 2:
            continue
        x, weight = n.args[0], n.args[1]
        if isinstance(weight, torch.fx.Node) and weight.op == "get_attr" \
                and isinstance(x, torch.fx.Node) and isinstance(env.get(x), torch.Tensor):
            found.setdefault(weight.target, []).append(env[x].reshape(-1, env[x].shape[-1]))
    return {k: torch.cat(v) for k, v in found.items()}


def _env_bytes(env: dict) -> int:
    """Bytes of the tensors a run's environment keeps (parameters are shared, not kept)."""
    return sum(v.numel() * v.element_size() for n, v in env.items()
               if n.op != "get_attr" and isinstance(v, torch.Tensor))


def _masks(w: torch.Tensor, patterns: list[tuple[int, int]]) -> list[torch.Tensor]:
    """The N:M mask of `w` for each pattern (`nm_format.nm_masks`: the rule prune-and-pack
    packs by, with one sort per M; sorting is most of step 2's time on DeiT-base)."""
    return [torch.from_numpy(mask)
            for mask in nm_format.nm_masks(w.detach().cpu().numpy(), patterns)]


def _local_error(w: torch.Tensor, xs: list[torch.Tensor], mask: torch.Tensor) -> float:
    """||X (W_masked - W)^T|| over all captured inputs X of the layer (step 2), `mask`
    the kept weights."""
    delta = (w.detach() * ~mask).float()
    # f32 products (what the model computes in), f64 sums of squares
    return float(torch.sqrt(sum(((x.float() @ delta.T).double() ** 2).sum() for x in xs)))


def _free_cores() -> int:
    """Threads for torch here: the cores not already busy. torch's default (one thread
    per core) collapses when other processes load the cores (OpenMP threads spin at
    every barrier): a DeiT-small forward took 1.3 s with 2 threads on a 2-core machine
    running a test suite, 0.12 s with 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    # the 1-minute load average counts this process too (it has been running)
    busy = round(max(0.0, os.getloadavg()[0] - 1.0)) if hasattr(os, "getloadavg") else 0
    return max(1, min(torch.get_num_threads(), cores - busy))


_LINEAR_OPS = (torch.ops.aten.linear.default,)
"""The ops whose input is captured as a layer's X (the exported graph's form of nn.Linear)."""
