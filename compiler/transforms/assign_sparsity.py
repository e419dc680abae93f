"""assign-sparsity: choose the N:M pattern of every nm.linear (issue 5).

Sets (or removes) the `sparsity` property of `nm.linear` ops from the `spec` option, in
one of the forms of `nmc compile --sparsity` (see `nmc.compiler.sparsity.spec`):

    N:M | FILE.json | elsa:speedup=S | elsa:flops=F   (elsa: optionally ,rank=joint|energy)

With an empty `spec` (the default) the pass changes nothing, so it sits in the default
pipeline after raise-torch-to-nm. Every pattern must be supported by `target` (the
verifier of nm.linear checks only 0 < N <= M) and M must divide the layer's K: the pass
checks that (`check_linear_patterns`) for every nm.linear, the patterns it sets and the
ones the IR already carries, before schedule-tiles uses any. The ELSA
form measures per-layer sensitivities on the PyTorch model of the module's `nm.model`
file with the calibration inputs of `calib` (a .npy; default: see
`nmc.compiler.sparsity.sensitivity`). `out` writes the chosen configuration as JSON (the
format FILE.json reads); `report` prints the (layer, pattern, cycles, error) table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp, ReturnOp

from nmc.common.observer import parse_observer
from nmc.compiler.dialects.nm import LinearOp, ParamOp, tensor_shape
from nmc.compiler.kernels.linear import LinearProblem
from nmc.compiler.sparsity.block_linears import block_linears
from nmc.compiler.sparsity.cost import linear_cycles, linear_macs
from nmc.common.nm_format import Pattern, pattern_text
from nmc.compiler.sparsity.spec import (
    SparsityError, SparsitySpec, check_supported, config_to_json, parse_pattern, parse_spec,
    read_config,
)
from nmc.compiler.sparsity.target_check import check_linear_patterns
from nmc.compiler.transforms.target_option import TargetedPass
from nmc.isa.target import Target

HEAD_NAMES = ("head", "classifier")
JOINT, ENERGY = "joint error", "weight energy pruned"
"""How the table names what rank=joint / rank=energy ranked by."""


def linear_dims(op: LinearOp) -> LinearProblem:
    """The op's linear problem, dense (the searches cost each pattern on it)."""
    return replace(LinearProblem.of(op), pattern=None)


def is_head(op: LinearOp) -> bool:
    """The classifier head: named head/classifier, or its result is returned directly."""
    if op.layer_name.rsplit(".", 1)[-1] in HEAD_NAMES:
        return True
    return any(isinstance(use.operation, ReturnOp) for use in op.result.uses)


def linear_ops(module: ModuleOp) -> list[LinearOp]:
    return [op for op in module.walk() if isinstance(op, LinearOp)]


def sparsifiable(module: ModuleOp) -> list[LinearOp]:
    """ELSA's layers: the linears of the transformer blocks (`block_linears`), never the
    classifier head."""
    return [op for op in block_linears(module) if not is_head(op)]


def _check_k(op: LinearOp, pattern: Pattern, where: str) -> None:
    if pattern is not None and linear_dims(op).K % pattern[1]:
        raise SparsityError(f"{where}: layer '{op.layer_name}' has input dimension K = "
                            f"{linear_dims(op).K}, not a multiple of M = {pattern[1]} "
                            f"(pattern {pattern[0]}:{pattern[1]})")


def _weight_param(op: LinearOp) -> str:
    owner = op.weight.owner
    if not isinstance(owner, ParamOp):
        raise SparsityError(f"layer '{op.layer_name}': its weight is not a model parameter, "
                            f"so its sensitivity cannot be measured")
    return owner.param_name.data


def _input_shape(module: ModuleOp) -> tuple[int, ...]:
    main = next((op for op in module.walk() if isinstance(op, FuncOp)
                 and op.sym_name.data == "main"), None)
    if main is None or len(main.args) != 1:
        raise SparsityError("--sparsity elsa needs a model with exactly one input")
    return tensor_shape(main.args[0])


def _sparsifiable_or_error(module: ModuleOp, what: str) -> list[LinearOp]:
    """`sparsifiable(module)`, or a SparsityError saying that `what` has nothing to prune
    and how to name linears in a file instead."""
    ops = sparsifiable(module)
    if not ops:
        names = [op.layer_name for op in linear_ops(module)]
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8
                                        else "") if names else "none"
        raise SparsityError(f"{what} prunes the linears of transformer blocks (inside a "
                            f"residual branch x + f(x)) and this model has none; name the "
                            f"linears to prune in a FILE.json (linear layers: {shown})")
    return ops


def uniform_config(module: ModuleOp, pattern: Pattern, target: Target) -> dict[str, Pattern]:
    check_supported("--sparsity", pattern, target)
    config = {}
    ops = sparsifiable(module) if pattern is None else \
        _sparsifiable_or_error(module, f"--sparsity {pattern_text(pattern)}")
    for op in ops:
        _check_k(op, pattern, f"--sparsity {pattern_text(pattern)}")
        config[op.layer_name] = pattern
    return config


def given_config(module: ModuleOp, spec: SparsitySpec, target: Target) -> dict[str, Pattern]:
    """The layer -> pattern of a spec that names its configuration (uniform N:M, or a
    FILE.json), checked against `module`'s linear layers and the target."""
    if spec.kind == "uniform":
        return uniform_config(module, spec.pattern, target)
    return file_config(module, spec.path, target)


def file_config(module: ModuleOp, path: str, target: Target) -> dict[str, Pattern]:
    raw = read_config(path)
    ops = {op.layer_name: op for op in linear_ops(module)}
    config: dict[str, Pattern] = {}
    for key, value in raw.items():
        where = f"--sparsity {path}: layer '{key}'"
        if key not in ops:
            known = list(ops)
            shown = ", ".join(known[:8]) + (f", ... ({len(known)} in all)" if len(known) > 8
                                            else "")
            raise SparsityError(f"{where}: the model has no linear layer of that name "
                                f"(linear layers: {shown})")
        pattern = parse_pattern(value, where, target)
        _check_k(ops[key], pattern, f"--sparsity {path}")
        config[key] = pattern
    return config


@dataclass
class Candidate:
    """One sparsifiable layer of ELSA's search: its weight parameter, shape, and the
    cost of each of its choices (index 0 is dense)."""

    name: str
    param: str
    dims: LinearProblem
    patterns: list[Pattern]
    costs: list[float]


def candidates(module: ModuleOp, budget: str, target: Target) -> tuple[list[Candidate], float]:
    """The sparsifiable layers with their choices (dense, then every target pattern whose
    M divides K) costed by `budget` ("speedup": predicted cycles; "flops": MACs), and the
    dense cost of the other linear layers (the head)."""

    def cost(dims: LinearProblem, pattern: Pattern) -> float:
        return linear_cycles(dims, pattern, target) if budget == "speedup" \
            else linear_macs(dims, pattern)

    cand = _sparsifiable_or_error(module, "ELSA")
    cand_names = {op.layer_name for op in cand}
    fixed = sum(cost(linear_dims(op), None) for op in linear_ops(module)
                if op.layer_name not in cand_names)
    out = []
    for op in cand:
        dims = linear_dims(op)
        pats: list[Pattern] = [None] + [p for p in target.sparse_patterns
                                        if dims.K % p[1] == 0 and p[0] < p[1]]
        out.append(Candidate(op.layer_name, _weight_param(op), dims, pats,
                             [cost(dims, p) for p in pats]))
    return out, fixed


def int8_layers(module: ModuleOp, quant_file: str = ""):  # noqa: ANN201 - Int8Layers
    """The layers the quantize pass will make int8 on an int8 target, with the scales it
    will use where they are known before sparsity is chosen: a PT2E model's own, or those
    of the --quant file (`quant_file`; its weight scales where it gives them); else input
    scales calibrated by the sensitivity and weight scales of each masked weight. What the
    ELSA sensitivity measures on, so that its errors are those of the quantized model."""
    from nmc.compiler.dialects.nm_attrs import model_scales
    from nmc.compiler.sparsity.int8_run import Int8Layers
    from nmc.compiler.transforms.quantize import layer_key, quantizable_ops, read_scales

    ops = quantizable_ops(module)
    given = model_scales(module)
    if not given and quant_file:
        table = read_scales(quant_file, ops)
        given = {op.weight.owner.param_name.data: (table[layer_key(op)]["input_scale"],
                                                   table[layer_key(op)].get("weight_scales"))
                 for op in ops}
    names = [op.weight.owner.param_name.data for op in ops]
    if given:
        names = [n for n in names if n in given]
    return Int8Layers({n: given[n][0] if given else None for n in names},
                      {n: given[n][1] for n in names if given and given[n][1] is not None})


def elsa_config(module: ModuleOp, budget: str, factor: float, calib: str,
                target: Target, quant_file: str = "", observer: str = "max",
                rank: str = "sum"
                ) -> tuple[dict[str, Pattern], list[tuple], tuple[str, float] | None]:
    """The ELSA search's configuration, its table rows and, with rank=joint or energy,
    what it ranked by and its value for that configuration (`quant_file`: the int8 scales
    the program will use, see `int8_layers`; `observer`: how the int8 input scales it
    does not give are calibrated, nmc.common.observer; `rank`: `spec.ELSA_RANKS`). The
    layers' sensitivities, and rank=joint's errors of whole configurations, are measured
    here or over the Dask cluster offered to the command (`nmc compile --workers N`:
    `cluster.batch_scorer`), with the same results; rank=energy measures nothing."""
    from nmc.common.cluster import batch_scorer
    from nmc.compiler.frontend.weights import weights_of_module
    from nmc.compiler.sparsity import sensitivity
    from nmc.compiler.sparsity.elsa import SMALL_SEARCH, LayerChoices, search

    weights = weights_of_module(module)
    if weights is None:
        raise SparsityError("--sparsity elsa needs the model file (the module does not name "
                            "one)")
    shape = _input_shape(module)
    int8 = int8_layers(module, quant_file) if target.int8 else None
    how = parse_observer(observer)
    weights.program()  # an ONNX model has none: its error before the calibration's
    cand, fixed = candidates(module, budget, target)
    if rank == "energy":
        errors = pruned_energy(weights, cand)
    else:
        inputs = sensitivity.load_calibration(calib, shape)
        with batch_scorer(lambda: sensitivity.measurer(weights, inputs, int8, how),
                          lambda: sensitivity.remote(weights, inputs, int8, how),
                          desc="layer sensitivity", unit="layer",
                          names=lambda item: item[0]) as errors_of:
            errors = errors_of([(c.param, c.patterns) for c in cand])
    layers = [LayerChoices(c.name, c.patterns, e, c.costs) for c, e in zip(cand, errors)]
    dense = fixed + sum(l.costs[0] for l in layers)
    ranked = None
    if rank == "joint":
        with batch_scorer(lambda: sensitivity.measurer(weights, inputs, int8, how, True),
                          lambda: sensitivity.remote(weights, inputs, int8, how, True),
                          desc="joint errors", unit="configuration") as joint_errors:
            result = search(layers, fixed, dense / factor, budget, factor,
                            lambda choices: joint_errors(
                                [{c.param: c.patterns[i] for c, i in zip(cand, choice)}
                                 for choice in choices]),
                            SMALL_SEARCH)
        ranked = (JOINT, result.error)
    else:
        result = search(layers, fixed, dense / factor, budget, factor)
        if rank == "energy":
            ranked = (ENERGY, result.error)
    config = result.patterns(layers)
    rows = []
    by_name = {l.name: (l, c) for l, c in zip(layers, result.choice)}
    for op in linear_ops(module):
        pattern = config.get(op.layer_name)
        err = by_name[op.layer_name][0].errors[by_name[op.layer_name][1]] \
            if op.layer_name in by_name else None
        rows.append((op.layer_name, pattern, linear_cycles(linear_dims(op), pattern, target),
                     err))
    return config, rows, ranked


def pruned_energy(weights, cand: list[Candidate]) -> list[list[float]]:
    """rank=energy's per-layer cost of each choice: the share of the sparsifiable layers'
    weight energy (sum of w^2) its mask removes. Additive over layers, so the search's sum
    is exact; what a magnitude criterion over the whole model keeps (see
    docs/ARCHITECTURE.md: after a fine-tune it predicted accuracy where the output errors
    did not)."""
    from nmc.common import nm_format

    arrays = [np.asarray(weights[c.param], np.float64) for c in cand]
    total = sum(float((w * w).sum()) for w in arrays) or 1.0
    out = []
    for c, w in zip(cand, arrays):
        sparse = [p for p in c.patterns if p is not None]
        removed = {p: float((w * w * ~m).sum()) / total
                   for p, m in zip(sparse, nm_format.nm_masks(w, sparse))}
        out.append([0.0 if p is None else removed[p] for p in c.patterns])
    return out


@dataclass(frozen=True)
class AssignSparsity(TargetedPass):
    """Set the N:M `sparsity` of nm.linear ops (spec: N:M, FILE.json, elsa:speedup=S|flops=F)."""

    name = "assign-sparsity"

    spec: str = ""
    calib: str = ""
    out: str = ""
    report: bool = False
    quant: str = ""  # quantize's scales file, which the ELSA sensitivity measures with
    observer: str = "max"  # ... or quantize's calibration observer, where it calibrates

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.spec:
            self.assign(op, self.target_for(op))
        else:
            self.check_target(op)
        if any(linear.sparsity_pattern for linear in linear_ops(op)):
            # the patterns set here and those the IR already carried, before any use
            check_linear_patterns(op, self.target_for(op))

    def assign(self, op: ModuleOp, target: Target) -> None:
        spec = parse_spec(self.spec)
        rows, ranked = None, None
        if spec.kind in ("uniform", "file"):
            config = given_config(op, spec, target)
        else:
            config, rows, ranked = elsa_config(op, spec.budget, spec.value, self.calib,
                                               target, self.quant, self.observer, spec.rank)
        for linear in linear_ops(op):
            if linear.layer_name in config:
                linear.set_sparsity(config[linear.layer_name])
        if self.report:
            print(self.table(op, config, rows, target, ranked), file=sys.stdout, flush=True)
        if self.out:
            from nmc.common.fileio import atomic_write_text

            atomic_write_text(self.out, config_to_json(config))

    def table(self, module: ModuleOp, config: dict[str, Pattern], rows, target: Target,
              ranked: tuple[str, float] | None = None) -> str:
        from nmc.compiler.sparsity.elsa import format_table

        if rows is None:
            rows = [(op.layer_name, config.get(op.layer_name),
                     linear_cycles(linear_dims(op), config.get(op.layer_name), target), None)
                    for op in linear_ops(module)]
        dense = sum(linear_cycles(linear_dims(op), None, target) for op in linear_ops(module))
        total = sum(r[2] for r in rows)
        macs = sum(linear_macs(linear_dims(op), config.get(op.layer_name))
                   for op in linear_ops(module))
        dense_macs = sum(linear_dims(op).macs for op in linear_ops(module))
        errs = [r[3] for r in rows if r[3] is not None]
        # with rank=energy the rows hold energies, whose sum is what `ranked` gives
        err = f", predicted error {sum(errs):.3e}" if errs and (ranked is None or
                                                               ranked[0] != ENERGY) else ""
        line = (f"linear layers: {int(total)} cycles ({dense / max(total, 1):.3f}x faster "
                f"than dense), {macs / 1e6:.3f} M MACs ({dense_macs / max(macs, 1):.3f}x "
                f"fewer){err}")
        if ranked is not None:
            line += f", {ranked[0]} {ranked[1]:.3e} (what the search ranked by)"
        return format_table(rows, line)
