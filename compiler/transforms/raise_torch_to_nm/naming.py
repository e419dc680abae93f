"""Layer names: every nm compute op is named after the PyTorch module it came from."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from xdsl.ir import Operation

from nmc.compiler.frontend.locations import location_info


_INVALID_NAME_CHAR = re.compile(r"[^\w$.-]")


def value_name(name: str) -> str:
    """`name` as an SSA value name hint (printed `%name`): MLIR's and xDSL's value names
    must not start with a digit, which a top-level `nn.Sequential`'s parameters (`0.weight`)
    and layers (`0`) do, so those get a `v` in front; other characters outside
    [A-Za-z0-9_$.-] become `_`."""
    name = _INVALID_NAME_CHAR.sub("_", name)
    return name if name and not name[0].isdigit() else f"v{name}"


def module_path(ops: Sequence[Operation]) -> str:
    """The module path of a group of ops: the common dotted prefix of their locations'
    paths (`blocks.0.attn.qkv`, `blocks.0.attn` -> the latter)."""
    return _common_path([location_info(o.location)[0] for o in ops])


def _common_path(paths: Sequence[str]) -> str:
    split = [p.split(".") if p else [] for p in paths]
    if not split:
        return ""
    common: list[str] = []
    for parts in zip(*split):
        if any(x != parts[0] for x in parts):
            break
        common.append(parts[0])
    return ".".join(common)


def assign_layer_names(entries: Sequence[tuple[str, str]]) -> list[str]:
    """Unique layer names for compute ops given (module path, kind) in program order.

    A path holding exactly one compute op names it (`fc1`); otherwise each gets
    `path.kind` (`blocks.0.add`), with `_1`, `_2`... on repeats (`blocks.0.add_1`). Ops at
    the top level (empty path) get the kind itself (`add`, `add_1`).
    """
    per_path = Counter(path for path, _ in entries)
    used: set[str] = {path for path, _ in entries if path and per_path[path] == 1}
    names: list[str] = []
    for path, kind in entries:
        if path and per_path[path] == 1:
            names.append(path)
            continue
        base = f"{path}.{kind}" if path else kind
        k = 0
        name = base
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        names.append(name)
    return names
