"""The pass registry and the default pipeline of `nmc compile`.

Every pass is registered here once, by its `name`; `nmc compile`, `nmc opt -p ...` and the
IR-printing options all go through `run_pipeline`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.passes import ModulePass, PassPipeline
from xdsl.printer import Printer

from nmc.compiler.dialects.nm import NM
from nmc.compiler.dialects.torch import TORCH
from nmc.compiler.transforms.insert_tokens import InsertTokens
from nmc.compiler.transforms.lower_nm_to_isa import LowerNmToIsa
from nmc.compiler.transforms.plan_memory import PlanMemory
from nmc.compiler.transforms.raise_torch_to_nm import RaiseTorchToNm
from nmc.compiler.transforms.schedule_tiles import ScheduleTiles
from nmc.isa.dialect import ISA

PASSES: dict[str, type[ModulePass]] = {
    p.name: p for p in (RaiseTorchToNm, ScheduleTiles, PlanMemory, LowerNmToIsa, InsertTokens)
}

DEFAULT_PIPELINE = ("raise-torch-to-nm", "schedule-tiles", "plan-memory", "lower-nm-to-isa",
                    "insert-tokens")
TARGETED_PASSES = ("schedule-tiles", "lower-nm-to-isa")


def make_context() -> Context:
    """All dialects nmc reads and writes; torch ops nmc does not model stay unregistered
    so that they can be reported by name instead of failing to parse."""
    ctx = Context(allow_unregistered=True)
    for dialect in (Builtin, Func, TORCH, NM, ISA):
        ctx.load_dialect(dialect)
    return ctx


def default_pipeline_spec(target: str) -> str:
    return ",".join(f"{p}{{target={target}}}" if p in TARGETED_PASSES else p
                    for p in DEFAULT_PIPELINE)


def print_ir(module: ModuleOp) -> str:
    from io import StringIO

    out = StringIO()
    Printer(stream=out).print_op(module)
    return out.getvalue() + "\n"


IrCallback = Callable[[str, ModuleOp], None]
"""Called with ("input", module) before the first pass and (pass name, module) after each."""


def run_pipeline(module: ModuleOp, spec: str, ctx: Context | None = None,
                 after_pass: IrCallback | None = None) -> ModuleOp:
    ctx = ctx or make_context()

    def callback(previous: ModulePass | None, mod: ModuleOp, _next: ModulePass | None):
        if after_pass is not None:
            after_pass(previous.name if previous else "input", mod)

    available = {name: (lambda p=p: p) for name, p in PASSES.items()}
    try:
        pipeline = PassPipeline.parse_spec(available, spec, callback)
    except ValueError as e:  # unknown pass or bad option
        from nmc.isa.errors import NmcError

        known = ", ".join(PASSES)
        raise NmcError(f"bad pass pipeline '{spec}': {e} (known passes: {known})") from None
    pipeline.apply(ctx, module)
    module.verify()
    return module


class IrDumper:
    """`--print-ir-after-all`, `--print-ir-after=NAME` and `--dump-ir DIR` in one callback."""

    def __init__(self, print_after: Iterable[str] = (), print_all: bool = False,
                 dump_dir: Path | None = None, write=None):
        self.print_after, self.print_all = set(print_after), print_all
        self.dump_dir, self.write = dump_dir, write
        self.stage = 0

    def __call__(self, pass_name: str, module: ModuleOp) -> None:
        text = None
        if self.print_all or pass_name in self.print_after:
            text = print_ir(module)
            print(f"// -----// IR after {pass_name} //----- //\n{text}", flush=True)
        if self.dump_dir is not None:
            text = text or print_ir(module)
            self.write(self.dump_dir / f"{self.stage:02d}-{pass_name}.mlir", text)
        self.stage += 1
