"""The rewrite of a planned function: torch ops out, nm ops in, in program order.

Each group's nm op(s) are built where its root (last op) is and replace the root's result;
each no-op's result is replaced by the value it equals. That step is an xDSL
`RewritePattern` walked once over the function in program order, so a group's operands are
already raised when it is built. The group's other ops, then unused, and unused constants
are erased afterwards; so are the old arguments (see `arguments.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.dialects.builtin import FunctionType
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Operation, SSAValue
from xdsl.pattern_rewriter import PatternRewriter, PatternRewriteWalker, RewritePattern
from xdsl.rewriter import InsertPoint

from nmc.compiler.transforms.raise_torch_to_nm.arguments import raise_arguments
from nmc.compiler.transforms.raise_torch_to_nm.framework import Group
from nmc.compiler.transforms.raise_torch_to_nm.naming import assign_layer_names, value_name
from nmc.compiler.transforms.raise_torch_to_nm.plan import PASSIVE_OPS, Plan


@dataclass
class _ReplacePlanned(RewritePattern):
    """Replaces the root of each planned group by its nm op(s), and each no-op by the value
    its result equals."""

    roots: dict[Operation, tuple[Group, str]]  # root -> (its group, the layer name)
    aliases: dict[Operation, SSAValue]
    values: dict[SSAValue, SSAValue] = field(default_factory=dict)  # torch -> raised value

    def raised(self, value: SSAValue) -> SSAValue:
        return self.values.get(value, value)

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if op in self.aliases:
            value = self.raised(self.aliases[op])
            self.values[op.results[0]] = value
            rewriter.replace(op, [], [value])
            return
        entry = self.roots.get(op)
        if entry is None:
            return
        group, layer = entry
        built = group.build(self.raised, layer)
        news = built if isinstance(built, list) else [built]
        for new in news:
            new.location = group.loc_op.location
            if "layer" in new.properties:
                new.results[0].name_hint = value_name(layer)
        # Ops before the last one are inserted on their own, so that the replacement does
        # not hand the last op's name hint to them.
        rewriter.insert_op(news[:-1], InsertPoint.before(op))
        self.values[op.results[0]] = news[-1].results[0]
        # a root's other results (native_layer_norm's mean and rstd) are unused
        rest: list[SSAValue | None] = [None] * (len(op.results) - 1)
        rewriter.replace(op, news[-1], [news[-1].results[0], *rest])


def _layer_names(plan: Plan, position: dict[Operation, int]
                 ) -> dict[Operation, tuple[Group, str]]:
    """root -> (group, layer name), layer names assigned in program order of the roots
    (nm.reshape groups, kind "", need none)."""
    groups = sorted(plan.groups, key=lambda g: position[g.root])
    named = [g for g in groups if g.kind]
    layers = dict(zip(named, assign_layer_names([(g.path, g.kind) for g in named])))
    return {g.root: (g, layers.get(g, "")) for g in groups}


def raise_func(func: FuncOp, plan: Plan) -> None:
    block = func.body.block
    old_args = list(block.args)
    position = {op: i for i, op in enumerate(block.ops)}
    replace = _ReplacePlanned(_layer_names(plan, position), plan.aliases)
    raise_arguments(func, replace.values)
    PatternRewriteWalker(replace, apply_recursively=False).rewrite_region(func.body)
    ret = block.last_op
    assert isinstance(ret, ReturnOp)
    ret.operands = [replace.raised(x) for x in ret.operands]  # an argument returned as is

    # The rest of each group, and constants nothing reads any more, users before producers.
    converted = plan.converted
    for op in reversed(list(block.ops)):
        if op in converted or (
            isinstance(op, PASSIVE_OPS) and not any(r.uses for r in op.results)
        ):
            block.erase_op(op)
    for arg in old_args:
        block.erase_arg(arg)
    func.function_type = FunctionType.from_lists(
        [a.type for a in block.args], [v.type for v in ret.operands]
    )
    func.arg_attrs = None
