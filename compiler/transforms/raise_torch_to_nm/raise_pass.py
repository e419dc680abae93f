"""The pass: plan every function, report everything that cannot be raised, then rewrite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp
from xdsl.passes import ModulePass

from nmc.compiler.errors import FrontendError, UnsupportedOpsError
from nmc.compiler.transforms.raise_torch_to_nm.plan import make_plan, unsupported
from nmc.compiler.transforms.raise_torch_to_nm.rewrite import raise_func


@dataclass(frozen=True)
class RaiseTorchToNm(ModulePass):
    """Raise the torch-mlir import to the nm dialect (see the package docstring)."""

    name: ClassVar[str] = "raise-torch-to-nm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        funcs = [f for f in op.ops if isinstance(f, FuncOp)]
        plans = [make_plan(func) for func in funcs]
        model_errors = [e for p in plans for e in p.model_errors]
        if model_errors:
            raise FrontendError("; ".join(model_errors))
        problems = [pr for p in plans for pr in p.problems]
        problems.extend(unsupported(o) for o in op.ops if not isinstance(o, FuncOp))
        if problems:
            raise UnsupportedOpsError(problems)
        for func, plan in zip(funcs, plans):
            raise_func(func, plan)
        op.verify()
