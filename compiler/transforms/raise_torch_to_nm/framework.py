"""The matcher framework: a `Group` is what one match claims, a `Matcher` one pattern family.

Raising works on whole functions, not op by op: every op must be claimed by exactly one
group (or be a no-op, a constant, or row movement) before anything is rewritten, so that all
unsupported ops are reported together and no pattern half-converts a graph. A matcher is
tried at every op its `anchors` accepts (the op a pattern is recognised from: the sdpa, the
conv2d, ...) in the priority order of `matchers.MATCHERS`; its `match` returns the group or
raises `Reject` with the reason, which is reported with the anchor if nothing else claims it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xdsl.ir import Operation, SSAValue

from nmc.compiler.transforms.raise_torch_to_nm.naming import module_path
from nmc.compiler.transforms.raise_torch_to_nm.reading import Reject, op_name

Mapper = Callable[[SSAValue], SSAValue]
"""A torch value -> the value that replaces it in the raised function."""

Builder = Callable[[Mapper, str], "Operation | list[Operation]"]
"""Builds a group's nm op(s) from the mapper and the layer name; the last op's result
replaces the root's. It runs during the rewrite, when earlier groups are already replaced
(their users read nm values): so it reads nothing of the torch graph itself, only what
`match` captured (torch values, mapped through the Mapper; shapes; constants)."""


@dataclass(eq=False)
class Group:
    """Torch ops replaced by one nm compute op, built where `root` is (its last op)."""

    kind: str  # the layer-name kind ("": no compute op, no layer name)
    ops: tuple[Operation, ...]
    root: Operation  # its result is replaced by the (last) nm op's result
    build: Builder
    loc_op: Operation  # the nm op takes its location

    @property
    def path(self) -> str:
        return module_path(self.ops)

    def check_internal_uses(self) -> None:
        """Every result of a non-root op of the group is used only inside the group (else
        erasing the group would leave a dangling use)."""
        inside = set(self.ops)
        for o in self.ops:
            if o is self.root:
                continue
            for r in o.results:
                for use in r.uses:
                    if use.operation not in inside:
                        raise Reject(
                            f"the {self.kind} pattern's intermediate {op_name(o)} is also "
                            f"used by {op_name(use.operation)}"
                        )


@dataclass(frozen=True)
class Matcher:
    """One pattern family: the ops it may be recognised from, and how to match from one."""

    name: str
    anchors: Callable[[Operation], bool]
    match: Callable[[Operation], Group]  # raises Reject (unsupported) or ModelError


def anchored_by(*op_types: type[Operation]) -> Callable[[Operation], bool]:
    """An `anchors` test: the op is one of `op_types`."""
    return lambda op: isinstance(op, op_types)
