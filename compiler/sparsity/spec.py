"""The `--sparsity` option: its forms, the patterns it names, and which layers it covers.

    N:M                    every transformer-block linear at N:M
    FILE.json              per layer: {"blocks.0.attn.qkv": "2:4", "blocks.0.mlp.fc1":
                           "dense", ...}; layers not named stay dense
    elsa:speedup=S         ELSA search: the least predicted accuracy loss whose linear
                           layers run at least S times faster than dense (cycles)
    elsa:flops=F           ... whose linear layers need at most 1/F of the dense MACs
    elsa:...,rank=joint    ... ranking configurations by the output error of each whole
                           configuration (measured on the calibration inputs), not by the
                           sum of its layers' errors alone (`rank=sum`, the default)
    elsa:...,rank=energy   ... by the share of the weights' energy the masks remove

Sparsifiable layers (the uniform and ELSA forms) are ELSA's: the linears of every
transformer block (qkv, proj, fc1, fc2 in timm's names), found by structure, the linears
inside a residual branch x + f(x) (`nmc.compiler.sparsity.block_linears`), never the
classifier head (the linear whose layer name ends in `head` or `classifier`, or whose
result `main` returns). Linears between blocks (Swin's patch-merging
`layers.N.downsample.reduction`) and the head stay dense; the patch embedding is an
`nm.patch_embed`, not an `nm.linear`, so it is always dense, like the attention matmuls.
A FILE.json may name any `nm.linear`, these included: `--sparsity-out` of a uniform or ELSA
compile writes the file to start from.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from nmc.common import nm_format
from nmc.common.errors import NmcError
from nmc.common.json_strict import parse_json
from nmc.common.nm_format import Pattern
from nmc.isa.target import Target

DENSE_WORDS = ("dense",)


class SparsityError(NmcError):
    """A bad `--sparsity` / `--calib` value, or a budget no configuration meets."""


@dataclass(frozen=True)
class SparsitySpec:
    kind: str  # "uniform", "file", "elsa"
    pattern: Pattern = None  # uniform
    path: str = ""  # file
    budget: str = ""  # elsa: "speedup" or "flops"
    value: float = 0.0  # elsa
    rank: str = "sum"  # elsa: what its search ranks configurations by (ELSA_RANKS)


ELSA_RANKS = ("sum", "joint", "energy")
"""sum: the sum of the layers' errors alone (one measure per layer and pattern, then free);
joint: the error of the whole configuration, one model run per configuration searched;
energy: the share of the weights' energy (sum of w^2) the masks remove, no model run."""

_PATTERN = re.compile(r"\s*(\d+)\s*:\s*(\d+)\s*")


def supported_text(target: Target) -> str:
    pats = ", ".join(f"{n}:{m}" for n, m in target.sparse_patterns)
    return f"{pats or 'none'} (and dense, written 'dense' or M:M)"


def check_supported(where: str, pattern: Pattern, target: Target) -> None:
    """The one wording of an unsupported pattern, for every pass and option that checks
    one (`where` names the option, file key or layer)."""
    if nm_format.is_dense(pattern) or target.supports_pattern(*pattern):
        return
    raise SparsityError(f"{where}: target '{target.name}' does not support N:M pattern "
                        f"{pattern[0]}:{pattern[1]}; supported: {supported_text(target)}")


def parse_pattern(text: object, where: str, target: Target | None = None) -> Pattern:
    """'N:M' -> (N, M); 'dense' or 'M:M' -> None. Checks 0 < N <= M and, with `target`,
    that the target supports the pattern. `where` names the option / key in errors."""
    if not isinstance(text, str):
        raise SparsityError(f"{where}: expected a pattern string \"N:M\" or \"dense\", "
                            f"got {json.dumps(text)}")
    if text.strip().lower() in DENSE_WORDS:
        return None
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise SparsityError(f"{where}: '{text}' is not an N:M pattern (like 2:4) or 'dense'")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n <= m:
        raise SparsityError(f"{where}: pattern {n}:{m} needs 0 < N <= M (keep N of every M "
                            f"weights)")
    pattern = nm_format.sparse_pattern((n, m))
    if pattern is not None and target is not None:
        check_supported(where, pattern, target)
    return pattern


def parse_spec(text: str) -> SparsitySpec:
    shown = f"--sparsity '{text}'"
    t = text.strip()
    if not t:
        raise SparsityError(f"{shown}: empty; expected N:M, FILE.json, elsa:speedup=S or "
                            f"elsa:flops=F")
    if t.lower().startswith("elsa"):
        rest, *options = t[4:].split(",")
        key, sep, value = rest.removeprefix(":").partition("=")
        key = key.strip().lower()
        if not rest.startswith(":") or not sep or key not in ("speedup", "flops"):
            raise SparsityError(f"{shown}: expected elsa:speedup=S or elsa:flops=F")
        rank = None
        for option in options:
            name, sep, choice = (x.strip().lower() for x in option.partition("="))
            if name != "rank" or not sep:
                raise SparsityError(f"{shown}: unknown option '{option.strip()}' after ','; "
                                    f"expected rank=" + " or rank=".join(ELSA_RANKS))
            if choice not in ELSA_RANKS:
                raise SparsityError(f"{shown}: rank must be {' or '.join(ELSA_RANKS)}, got "
                                    f"'{option.partition('=')[2].strip()}'")
            if rank is not None:
                raise SparsityError(f"{shown}: rank is given twice")
            rank = choice
        try:
            v = float(value)
        except ValueError:
            raise SparsityError(f"{shown}: {key} must be a number >= 1, got '{value}'") from None
        if not (math.isfinite(v) and v >= 1.0):
            raise SparsityError(f"{shown}: {key} must be a number >= 1 (a factor over dense), "
                                f"got {value.strip()}")
        return SparsitySpec("elsa", budget=key, value=v, rank=rank or "sum")
    if _PATTERN.fullmatch(t) or ":" in t and not t.lower().endswith(".json") \
            and not os.path.exists(t):
        return SparsitySpec("uniform", pattern=parse_pattern(t, "--sparsity"))
    if t.lower() in DENSE_WORDS:
        return SparsitySpec("uniform", pattern=None)
    if t.lower().endswith(".json") or os.path.exists(t):
        return SparsitySpec("file", path=t)
    raise SparsityError(f"{shown}: expected N:M (like 2:4), FILE.json, elsa:speedup=S or "
                        f"elsa:flops=F")


def read_config(path: str) -> dict[str, object]:
    """The raw {layer: pattern} object of a sparsity JSON file."""
    shown = f"--sparsity {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SparsityError(f"{shown}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SparsityError(f"{shown}: cannot read it ({getattr(e, 'strerror', None) or e})") \
            from None
    try:
        obj = parse_json(text)
    except json.JSONDecodeError as e:
        raise SparsityError(f"{shown}: not valid JSON ({e.msg} at line {e.lineno} column "
                            f"{e.colno})") from None
    except ValueError as e:  # a repeated key, NaN
        raise SparsityError(f"{shown}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise SparsityError(f"{shown}: expected a JSON object {{\"layer\": \"N:M\", ...}}, "
                            f"got a {type(obj).__name__}")
    return obj


def config_to_json(config: dict[str, Pattern]) -> str:
    """The file format `--sparsity FILE.json` reads (dense layers written as "dense")."""
    return json.dumps({k: nm_format.pattern_text(v) for k, v in config.items()}, indent=2) + "\n"
