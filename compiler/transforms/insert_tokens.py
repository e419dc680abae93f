"""insert-tokens: derive every dependency token from the instructions' memory footprints
(the hazard analysis is `nmc.isa.tokens.assign_tokens`)."""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from nmc.isa.tokens import assign_tokens


@dataclass(frozen=True)
class InsertTokens(ModulePass):
    """Set the wait/signal masks of every isa instruction from memory hazards."""

    name = "insert-tokens"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from nmc.isa.dialect import int_attr, is_instruction_op, op_to_instr

        ops = [o for o in op.body.block.ops if is_instruction_op(o)]
        tokened = assign_tokens([op_to_instr(o) for o in ops])
        for old, instr in zip(ops, tokened):
            # only the masks change: update them in place (rebuilding every op is slow)
            for name in ("wait", "signal"):
                old.properties[name] = int_attr(instr[name])
