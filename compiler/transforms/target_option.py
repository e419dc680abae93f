"""The `target` option shared by the passes that need the machine description, and the
rule that makes the module's target (`nm.target`) the one every pass works for.

The target is set once per module: the first pass that uses one records it (its option,
else DEFAULT_TARGET); a later pass without the option uses the module's, and a pass whose
option names a different machine is an error, not a silent switch half-way through a
compilation (tilings chosen for one machine, code emitted for another). A pass with
nothing to do (assign-sparsity without a spec, ...) leaves the module as it is, but still
refuses a disagreeing option (`check_target_option`).
"""

from dataclasses import dataclass, replace
from functools import lru_cache

from xdsl.ir import Operation
from xdsl.passes import ModulePass

from nmc.common.errors import NmcError
from nmc.compiler.dialects.nm_attrs import TargetAttr, module_target, set_module_target
from nmc.isa.target import DEFAULT_TARGET, Target, load_target

__all__ = ["DEFAULT_TARGET", "TargetMismatchError", "TargetedPass", "cached_target",
           "check_target_option", "resolve_target"]


class TargetMismatchError(NmcError):
    """A pass's `target` option names another machine than the module was compiled for."""


@lru_cache(maxsize=None)
def cached_target(name_or_path: str) -> Target:
    return load_target(name_or_path)


def _same_machine(a: Target, b: Target) -> bool:
    """Whether two loaded targets describe the same machine, wherever they were read from."""
    return replace(a, source="") == replace(b, source="")


def check_target_option(module: Operation, option: str, pass_name: str) -> None:
    """TargetMismatchError if `pass_name`'s `target` option ("" when not given) names
    another machine than the one the module is compiled for."""
    recorded = module_target(module)
    if (option and recorded is not None and option != recorded
            and not _same_machine(cached_target(option), cached_target(recorded))):
        raise TargetMismatchError(
            f"{pass_name}: target '{option}' differs from the module's target '{recorded}' "
            f"({TargetAttr.name}, set by an earlier pass); the target is chosen once per module: "
            f"drop the option or pass target=\"{recorded}\"")


def resolve_target(module: Operation, option: str, pass_name: str) -> Target:
    """The target `pass_name` (with its `target` option, "" when not given) works for on
    `module`; the first such pass records it on the module."""
    check_target_option(module, option, pass_name)
    recorded = module_target(module)
    if recorded is None:
        recorded = option or DEFAULT_TARGET
        target = cached_target(recorded)  # an unknown target fails before it is recorded
        set_module_target(module, recorded)
        return target
    return cached_target(recorded)


@dataclass(frozen=True)
class TargetedPass(ModulePass):
    """A pass with the `target` option: "" (not given) means the module's target
    (nm.target), else DEFAULT_TARGET; another machine than the module's is an error."""

    target: str = ""

    def target_for(self, module: Operation) -> Target:
        """The target this pass works for on `module` (`resolve_target`)."""
        return resolve_target(module, self.target, self.name)

    def check_target(self, module: Operation) -> None:
        """Refuse a `target` option that disagrees with the module's (`check_target_option`)."""
        check_target_option(module, self.target, self.name)
