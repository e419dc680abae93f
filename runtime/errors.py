"""The emulator's error type and the one way it names an instruction in a message."""

from __future__ import annotations

from nmc.common.errors import NmcError
from nmc.isa.table import Instr


class EmulatorError(NmcError):
    """A program cannot run: wrong target, bad inputs, out-of-bounds access, deadlock..."""


def instr_text(instr: Instr) -> str:
    """The assembly text of `instr` (the disassembler's, once it exists; otherwise a plain
    `mnemonic field=value ...` rendering, so error messages never depend on it)."""
    try:
        from nmc.isa.asm import disassemble_instr  # lazy: isa.asm pulls in the grammar
    except ImportError:
        disassemble_instr = None
    if disassemble_instr is not None:
        try:
            return disassemble_instr(instr)
        except Exception:  # an error message must never fail because of the disassembler
            pass
    fields = " ".join(f"{name}={value}" for name, value in instr.fields.items())
    return f"{instr.mnemonic} {fields}".rstrip()


def at_pc(pc: int, instr: Instr) -> str:
    """`at pc P: <instruction text>`, the suffix of every per-instruction error."""
    return f"at pc {pc}: {instr_text(instr)}"
