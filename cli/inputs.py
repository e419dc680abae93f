"""The inputs of `nmc run` and `nmc report`: `--input [NAME=]FILE.npy`, read safely (the
header is checked before the data, nothing is unpickled), or fixed-seed synthetic ones."""

from __future__ import annotations

import numpy as np

from nmc.cli.shared import UsageError, one_line_error

_NPY_MAGIC = b"\x93NUMPY"


def _read_npy(file: str, name: str, symbol) -> np.ndarray:
    """The array in the .npy `file` for input `name`. Checks the header before reading the
    data, so a file claiming a huge or wrong shape is refused without allocating it; never
    unpickles (an .npy of Python objects is refused)."""
    try:
        with open(file, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
            if head != _NPY_MAGIC:
                if head[:4] == b"PK\x03\x04":
                    why = ("it is an .npz archive; pass each array as its own .npy: "
                           "--input NAME=FILE.npy")
                elif head[:1] == b"\x80":
                    why = "it is a pickle; nmc reads inputs saved with np.save only"
                else:
                    why = "it is not a .npy file (save the input with np.save)"
                raise UsageError(f"cannot read input '{file}': {why}")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            if dtype.hasobject:
                raise UsageError(f"cannot read input '{file}': it holds Python objects "
                                 f"(dtype {dtype}); nmc does not unpickle inputs: save a "
                                 "float32 array")
            if symbol is not None and tuple(shape) != tuple(symbol.shape):
                raise UsageError(f"input '{name}' has shape {tuple(shape)}; expected "
                                 f"{tuple(symbol.shape)} (from {file})")
        return np.load(file, allow_pickle=False)
    except UsageError:
        raise
    except MemoryError:
        raise UsageError(f"cannot read input '{file}': it does not fit in memory") from None
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as e:
        # numpy reports a malformed header as ValueError, SyntaxError or TypeError
        why = getattr(e, "strerror", None) or one_line_error(e)
        raise UsageError(f"cannot read input '{file}': {why}") from None


def split_spec(spec: str) -> tuple[str | None, str]:
    """`--input NAME=FILE.npy` -> (NAME, FILE.npy); `--input FILE.npy` -> (None, FILE.npy)."""
    name, sep, file = spec.partition("=")
    return (name, file) if sep else (None, spec)


def load_inputs(specs: list[str], program) -> dict[str, np.ndarray]:
    """The arrays of `--input [NAME=]FILE.npy` options, by input name."""
    symbols = {s.name: s for s in program.symbols if s.kind == "input"}
    names = list(symbols)
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        name, file = split_spec(spec)
        if name is None:
            if len(names) != 1:
                raise UsageError(f"the program has inputs {names}: write --input NAME=FILE.npy")
            name, file = names[0], spec
        if name in inputs:
            raise UsageError(f"input '{name}' is given twice (--input {spec})")
        inputs[name] = _read_npy(file, name, symbols.get(name))
    return inputs


def synthetic_inputs(program) -> dict[str, np.ndarray]:
    """Fixed-seed normal inputs of the program's input shapes. Enough for timing: cycles do
    not depend on the input values (the ISA has no branches)."""
    rng = np.random.default_rng(0)
    return {s.name: rng.standard_normal(s.shape).astype(np.float32)
            for s in program.symbols if s.kind == "input"}
