"""`--window-keep sparsevit:latency=L` on a module: the inputs of the SparseViT search
(compiler/sparsity/sparsevit.py) from the nm IR, and its result.

- `latency_model`: estimated cycles per Swin block and keep ratio, from the module pruned
  uniformly at each ratio (window-prune's own rewrite) and every op's modelled cycles
  (`kernels.registry.op_cycles`, what the tile search ranks with), plus the scoring
  overhead per stage and window grid, plus everything outside the blocks.
- `searched_ratios`: the search, scoring each configuration by the output error of the
  pruned IR itself, interpreted with PyTorch ops (compiler/interpret.py) on the calibration
  inputs (`sensitivity.load_calibration`, as ELSA's), and its table on stderr. Over a Dask
  cluster the module travels as IR text, with the weights and inputs, once per worker.
"""

from __future__ import annotations

import sys

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp

from nmc.compiler.dialects.nm import tensor_shape
from nmc.compiler.dialects.nm_attrs import input_names
from nmc.compiler.kernels.registry import op_cycles
from nmc.compiler.sparsity import sparsevit
from nmc.compiler.sparsity.window_rewrite import (
    SCORING_OPS, SwinBlock, WindowPruneError, apply_ratios, stages_of, swin_blocks,
)
from nmc.common.progress import progress


def _owner(layer: str, names: list[str]) -> str | None:
    """The block a layer belongs to (its name starts with the block's and a dot)."""
    return next((b for b in names if layer.startswith(b + ".")), None)


def latency_model(module: ModuleOp, blocks: list[SwinBlock], target) -> sparsevit.LatencyModel:
    """Estimated cycles per block and ratio (module docstring)."""
    RATIOS, LatencyModel = sparsevit.RATIOS, sparsevit.LatencyModel
    names = [b.name for b in blocks]
    model = LatencyModel(names, {b.name: b.stage for b in blocks},
                         {b.name: (b.stage, b.grid) for b in blocks},
                         {b: {} for b in names}, {b.name: b.windows for b in blocks})
    for r in progress(RATIOS, desc="window latency model", unit="ratio"):
        clone = module.clone()
        cblocks = swin_blocks(clone)
        apply_ratios(cblocks, {b.name: r for b in cblocks})
        costs = {b: 0.0 for b in names}  # a block removed at r (0 windows kept) costs 0
        stage_overhead: dict[str, float] = {}
        grid_overhead: dict[tuple, float] = {}
        for op in clone.walk():
            if not hasattr(op, "layer_name"):
                continue
            cycles = float(op_cycles(op, target))
            layer = op.layer_name
            owner = _owner(layer, names)
            if layer.endswith(SCORING_OPS):
                if layer.endswith(SCORING_OPS[0]):
                    overhead, key = stage_overhead, model.stage_of[owner]
                else:
                    overhead, key = grid_overhead, model.grid_of[owner]
                overhead[key] = overhead.get(key, 0.0) + cycles
            elif owner is not None:
                costs[owner] += cycles
            elif r == 1.0:
                model.fixed += cycles
        # the scoring ops barely depend on the ratio: counted once, at the first ratio
        # that scores the stage or grid (at the lowest, small stages skip every block)
        for key, cycles in stage_overhead.items():
            model.stage_overhead.setdefault(key, cycles)
        for key, cycles in grid_overhead.items():
            model.grid_overhead.setdefault(key, cycles)
        for b in names:
            model.cost[b][r] = costs[b]
    return model


def searched_ratios(module: ModuleOp, blocks: list[SwinBlock], fraction: float, calib: str,
                    target) -> dict[str, float]:
    """sparsevit:latency=L: the searched ratio of every block; its table on stderr. The
    configurations are scored here, or over the Dask cluster offered to the command (`nmc
    compile --workers N`: `cluster.batch_scorer`), with the same results."""
    from nmc.common.cluster import Remote, batch_scorer
    from nmc.compiler.frontend.weights import weights_of_module
    from nmc.compiler.sparsity.sensitivity import load_calibration

    store = weights_of_module(module)
    if store is None:
        raise WindowPruneError("--window-keep sparsevit needs the model file (the module does "
                               "not name one)")
    func = next(o for o in module.walk() if isinstance(o, FuncOp))
    if len(func.args) != 1:
        raise WindowPruneError("--window-keep sparsevit needs a model with exactly one input")
    inputs = [x.numpy() for x in load_calibration(calib, tensor_shape(func.args[0]))]
    weights = {k: np.asarray(v, np.float32) for k, v in store.items()}
    in_name = input_names(func)[0]

    model = latency_model(module, blocks, target)
    stages = stages_of(blocks)
    budget = fraction * model.dense()
    with batch_scorer(lambda: WindowErrors(module, in_name, inputs, weights),
                      lambda: Remote(_window_errors_on_worker,
                                     (_generic_text(module), in_name, inputs, weights)),
                      desc="window errors", unit="configuration") as errors_of:
        result = sparsevit.search(model, stages, budget, errors_of)
    if result is None:
        raise WindowPruneError(
            f"--window-keep sparsevit:latency={fraction}: no configuration meets the budget "
            f"(keep {sparsevit.RATIOS[0]} everywhere gives {model.lowest_fraction():.2f} of "
            f"the dense latency)")
    print(sparsevit.format_table(result, model, fraction), file=sys.stderr)
    return result.config


class WindowErrors:
    """The output error of keep-ratio configurations: the module pruned at each,
    interpreted on the calibration inputs, against the dense module's outputs."""

    def __init__(self, module: ModuleOp, in_name: str, inputs: list[np.ndarray],
                 weights: dict[str, np.ndarray]):
        import torch

        self.module, self.in_name, self.inputs = module, in_name, inputs
        self.weights = {k: torch.tensor(v) for k, v in weights.items()}
        self.dense = self.outputs(module)

    def outputs(self, module: ModuleOp) -> list[np.ndarray]:
        from nmc.compiler.interpret import interpret

        return [next(iter(interpret(module, {self.in_name: x}, self.weights).values()))
                for x in self.inputs]

    def __call__(self, config: dict[str, float]) -> float:
        clone = self.module.clone()
        apply_ratios(swin_blocks(clone), config)
        return sparsevit.relative_error(self.outputs(clone), self.dense)


def _generic_text(module: ModuleOp) -> str:
    """The module as text a worker parses back (MLIR's generic form: every op and
    attribute as it is)."""
    from io import StringIO

    from xdsl.printer import Printer

    out = StringIO()
    Printer(stream=out, print_generic_format=True).print_op(module)
    return out.getvalue()


def _window_errors_on_worker(payload) -> WindowErrors:
    from xdsl.parser import Parser

    from nmc.compiler.dialects.context import make_context

    text, in_name, inputs, weights = payload
    return WindowErrors(Parser(make_context(), text).parse_module(), in_name, inputs, weights)
