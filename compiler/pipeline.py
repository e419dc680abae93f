"""The pass registry and the default pipeline of `nmc compile`.

Every pass is registered here once, by its `name`; `nmc compile`, `nmc opt -p ...` and the
IR-printing options all go through `run_pipeline`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, UnknownLoc
from xdsl.passes import ModulePass, PassPipeline
from xdsl.printer import Printer

from nmc.compiler.dialects.context import make_context as make_frontend_context
from nmc.compiler.transforms.assign_sparsity import AssignSparsity
from nmc.compiler.transforms.fuse_activations import FuseActivations
from nmc.compiler.transforms.insert_tokens import InsertTokens
from nmc.compiler.transforms.lower_nm_to_isa import LowerNmToIsa
from nmc.compiler.transforms.plan_memory import PlanMemory
from nmc.compiler.transforms.prune_and_pack import PruneAndPack
from nmc.compiler.transforms.quantize import Quantize
from nmc.compiler.transforms.raise_torch_to_nm import RaiseTorchToNm
from nmc.compiler.transforms.schedule_tiles import ScheduleTiles
from nmc.compiler.transforms.window_prune import WindowPrune
from nmc.isa.dialect import ISA
from nmc.common.errors import NmcError

PASSES: dict[str, type[ModulePass]] = {
    p.name: p for p in (RaiseTorchToNm, WindowPrune, FuseActivations, AssignSparsity,
                        Quantize, ScheduleTiles, PruneAndPack, PlanMemory, LowerNmToIsa,
                        InsertTokens)
}

DEFAULT_PIPELINE = ("raise-torch-to-nm", "window-prune", "fuse-activations", "assign-sparsity",
                    "quantize", "schedule-tiles", "prune-and-pack", "plan-memory",
                    "lower-nm-to-isa", "insert-tokens")
TARGETED_PASSES = ("window-prune", "assign-sparsity", "quantize", "prune-and-pack",
                   "schedule-tiles", "lower-nm-to-isa")


def make_context() -> Context:
    """All dialects nmc reads and writes (torch, nm, isa, builtin, func)."""
    return make_frontend_context(extra=(ISA,))


def default_pipeline_spec(target: str, sparsity: dict[str, object] | None = None,
                          window: dict[str, object] | None = None,
                          quant: dict[str, object] | None = None) -> str:
    """The pipeline of `nmc compile`; `sparsity` holds the options of assign-sparsity
    (spec, calib, out, report), `window` those of window-prune (keep, calib, out), `quant`
    those of quantize (calib, quant, out); without them those passes are no-ops (quantize
    then refuses an int8 target)."""

    def options(p: str) -> str:
        opts = {"target": target} if p in TARGETED_PASSES else {}
        extra = {"assign-sparsity": sparsity, "window-prune": window, "quantize": quant}.get(p)
        opts.update({k: v for k, v in (extra or {}).items() if v not in (None, "")})
        if p == "assign-sparsity" and sparsity and quant:
            # ELSA's sensitivity measures with the program's scales, or calibrates as it does
            opts.update({k: quant[k] for k in ("quant", "observer") if quant.get(k)})
        # strings need quotes in a pass option (a path, "elsa:speedup=2")
        text = " ".join(f"{k}={'true' if v is True else 'false' if v is False else json.dumps(str(v))}"
                        for k, v in opts.items())
        return f"{p}{{{text}}}" if text else p

    return ",".join(options(p) for p in DEFAULT_PIPELINE)


def print_ir(module: ModuleOp, generic: bool = False) -> str:
    """The module as IR text: the readable form (ops' custom assembly formats), or with
    `generic` MLIR's generic op form, which upstream MLIR parses too (with unregistered
    dialects allowed: it has no nm, win or isa dialect) and so does `nmc opt`."""
    from io import StringIO

    out = StringIO()
    # Locations are printed when there are any: the torch-level IR carries the PyTorch
    # module paths only there. Lowered IR has none and would only print loc(unknown).
    has_locations = any(not isinstance(op.location, UnknownLoc) for op in module.walk())
    Printer(stream=out, print_generic_format=generic,
            print_debuginfo=has_locations).print_op(module)
    return out.getvalue() + "\n"


IrCallback = Callable[[str, ModuleOp], None]
"""Called with ("input", module) before the first pass and (pass name, module) after each."""


def build_pipeline(spec: str, after_pass: IrCallback | None = None) -> PassPipeline:
    """Parse a pipeline spec (`a,b{opt=v}`); an unknown pass or option is an NmcError."""

    def callback(previous: ModulePass | None, mod: ModuleOp, _next: ModulePass | None):
        if after_pass is not None:
            after_pass(previous.name if previous else "input", mod)

    available = {name: (lambda p=p: p) for name, p in PASSES.items()}
    try:
        return PassPipeline.parse_spec(available, spec, callback)
    except Exception as e:  # xDSL raises ValueError / PassFailedException on bad specs
        known = ", ".join(PASSES)
        raise NmcError(f"bad pass pipeline '{spec}': {e} (known passes: {known})") from None


def run_pipeline(module: ModuleOp, spec: str | PassPipeline, ctx: Context | None = None,
                 after_pass: IrCallback | None = None) -> ModuleOp:
    pipeline = build_pipeline(spec, after_pass) if isinstance(spec, str) else spec
    pipeline.apply(ctx or make_context(), module)
    module.verify()
    return module


def dump_file_name(stage: int, pass_name: str) -> str:
    """The `--dump-ir` file of a stage: stage 0 is the input, then one per pass."""
    return f"{stage:02d}-{pass_name}.mlir"


class IrDumper:
    """`--print-ir-after-all`, `--print-ir-after=NAME` and `--dump-ir DIR` in one callback.

    Printed stages are in the readable form, or the generic one with `generic`
    (--print-op-generic); dumped files are always generic, so that upstream MLIR tools
    read them as well as `nmc opt`."""

    def __init__(self, print_after: Iterable[str] = (), print_all: bool = False,
                 dump_dir: Path | None = None, write=None, generic: bool = False):
        self.print_after, self.print_all = set(print_after), print_all
        self.dump_dir, self.write = dump_dir, write
        self.generic = generic
        self.stage = 0

    def __call__(self, pass_name: str, module: ModuleOp) -> None:
        text = None
        if self.print_all or pass_name in self.print_after:
            text = print_ir(module, self.generic)
            print(f"// -----// IR after {pass_name} //----- //\n{text}", flush=True)
        if self.dump_dir is not None:
            dump = text if self.generic and text is not None else print_ir(module, generic=True)
            self.write(self.dump_dir / dump_file_name(self.stage, pass_name), dump)
        self.stage += 1
