"""Planning: which torch ops each nm op replaces, decided for a whole function first.

In order: no-ops become aliases of the value they equal; each matcher of
`matchers.MATCHERS` claims groups at its anchors, in priority order; the unclaimed row
movement is composed. What is left (besides constants, lists and the return) cannot be
raised: it is reported with the reason its own matcher gave, if any.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Operation, SSAValue

from nmc.compiler.dialects import nm
from nmc.compiler.dialects import torch as tt
from nmc.compiler.errors import UnsupportedOp
from nmc.compiler.frontend.locations import location_info
from nmc.compiler.transforms.raise_torch_to_nm.arguments import argument_problems
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group
from nmc.compiler.transforms.raise_torch_to_nm.matchers import MATCHERS
from nmc.compiler.transforms.raise_torch_to_nm.movement import compose_movements
from nmc.compiler.transforms.raise_torch_to_nm.noops import noop_source
from nmc.compiler.transforms.raise_torch_to_nm.reading import ModelError, Reject, op_name
from nmc.compiler.refusals import REFUSALS

PASSIVE_OPS = (*tt.CONSTANT_OPS, tt.PrimListConstructOp)
"""Torch ops that compute nothing: removed once their users are."""


@dataclass
class Plan:
    """How one function is raised: the groups, the no-ops, what cannot be raised."""

    groups: list[Group] = field(default_factory=list)
    aliases: dict[Operation, SSAValue] = field(default_factory=dict)
    problems: list[UnsupportedOp] = field(default_factory=list)
    model_errors: list[str] = field(default_factory=list)

    @property
    def converted(self) -> set[Operation]:
        """Every torch op the raised function no longer holds (constants aside)."""
        ops = set(self.aliases)
        for g in self.groups:
            ops.update(g.ops)
        return ops


def unsupported(op: Operation, reason: str | None = None) -> UnsupportedOp:
    path, source = location_info(op.location)
    name = op_name(op)
    return UnsupportedOp(name, path, source, reason or REFUSALS.get(name))


def make_plan(func: FuncOp) -> Plan:
    plan = Plan()
    ops = list(func.body.block.ops)
    claimed: set[Operation] = set()
    reasons: dict[Operation, str] = {}

    for op in ops:
        alias = noop_source(op)
        if alias is not None:
            plan.aliases[op] = alias
            claimed.add(op)

    for matcher in MATCHERS:
        for op in ops:
            if op in claimed or not matcher.anchors(op):
                continue
            try:
                group = matcher.match(op)
                if any(o in claimed for o in group.ops):
                    raise Reject("overlaps another recognised pattern")
                group.check_internal_uses()
            except Reject as e:
                reasons.setdefault(op, str(e))
                continue
            except ModelError as e:
                plan.model_errors.append(str(e))
                claimed.add(op)
                continue
            plan.groups.append(group)
            claimed.update(group.ops)

    plan.groups.extend(compose_movements(ops, plan.aliases, claimed, reasons))
    plan.problems = argument_problems(func)
    for op in ops:
        if op in claimed or isinstance(op, (ReturnOp, *PASSIVE_OPS, *nm.COMPUTE_OPS, nm.ParamOp)):
            continue
        plan.problems.append(unsupported(op, reasons.get(op)))
    return plan


def collect_unsupported(func: FuncOp) -> list[UnsupportedOp]:
    """Every op of `func` that raise-torch-to-nm cannot convert, in program order."""
    return make_plan(func).problems
