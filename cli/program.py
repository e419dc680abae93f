"""`nmc disasm`, `nmc asm` and `nmc inspect`: prog.bin as assembly text, assembly text as
prog.bin, and a summary of a prog.bin."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from nmc.cli.paths import check_files
from nmc.cli.shared import read_source
from nmc.common.fileio import atomic_write_text


def register(sub) -> None:
    p = sub.add_parser("disasm", help="print prog.bin as assembly")
    p.add_argument("program", type=Path)
    p.add_argument("-o", "--output", type=Path)
    p.set_defaults(handler=cmd_disasm)

    p = sub.add_parser("inspect", help="summarise prog.bin: header, sections, symbols, "
                                       "per-layer sparsity, bytes and instruction counts")
    p.add_argument("program", type=Path)
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser("asm", help="assemble a .s file into prog.bin")
    p.add_argument("source", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.set_defaults(handler=cmd_asm)


def cmd_disasm(args) -> int:
    from nmc.isa.asm import disassemble
    from nmc.isa.container import read_program

    check_files(outputs=[("-o", args.output)], inputs=[("the program", args.program)])
    text = disassemble(read_program(args.program))
    if args.output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(args.output, text)
    return 0


def cmd_asm(args) -> int:
    from nmc.isa.asm import assemble
    from nmc.isa.container import write_program

    check_files(outputs=[("-o", args.output)], inputs=[("the source", args.source)])
    text = read_source(args.source, str(args.source))
    write_program(assemble(text, str(args.source)), args.output)
    return 0


def _stored_bytes_line(meta_layers: dict) -> str:
    """Stored weight bytes per dense byte of each (pattern, element type) the program's
    linear layers use (nm_format.stored_bytes_per_dense_byte), when one is sparse or int8."""
    from nmc.common import nm_format

    kinds = set()
    for info in meta_layers.values():
        if isinstance(info, dict) and isinstance(info.get("pattern"), str):
            kinds.add((info["pattern"], str(info.get("element", "f32"))))
    kinds = {k for k in kinds if k != ("dense", "f32") and k[1] in nm_format.ELEMENT_BYTES}
    if not kinds:
        return ""
    parts = []
    for text, element in sorted(kinds):
        try:
            pattern = None if text == "dense" else tuple(int(v) for v in text.split(":"))
            nm_format.check_pattern(*(pattern or (1, 1)))
        except (ValueError, TypeError):  # a META written by something else
            continue
        parts.append(f"{text} {element} "
                     f"{nm_format.stored_bytes_per_dense_byte(pattern, element):.3f}")
    return "stored bytes per dense byte (values + indices): " + ", ".join(parts)


def cmd_inspect(args) -> int:
    from nmc.isa.container import ProgramFormatError

    check_files(inputs=[("the program", args.program)])
    try:
        data = Path(args.program).read_bytes()
    except OSError as e:
        raise ProgramFormatError(f"cannot read {args.program}: {e.strerror or e}") from None
    sys.stdout.write(inspect_program(data, str(args.program)))
    return 0


def inspect_program(data: bytes, source: str = "<bytes>") -> str:
    """`nmc inspect`: a prog.bin's header, sections, symbols and, per layer, its kind,
    weight pattern / density / bytes (from META "layers") and instruction counts."""
    from nmc.isa.container import (
        FORMAT_VERSION, _header, _sections, program_from_bytes,
    )
    from nmc.runtime.report import layer_sparsity

    program = program_from_bytes(data, source)  # validates the whole file first
    name, target_id, dram_words, count = _header(data)
    bodies = _sections(data, count)
    lines = [f"{source}: prog.bin version {FORMAT_VERSION}, {len(data)} bytes",
             f"target      {name} (id {target_id})",
             f"dram_words  {dram_words} ({dram_words * 4 / 2**20:.2f} MiB)",
             f"sections    {count}"]
    for kind, body in sorted(bodies.items()):
        lines.append(f"  {kind.name:8s} {len(body):>12d} bytes")
    const_words = sum(c.size for _, c in program.constants)
    lines.append(f"constants   {len(program.constants)} blocks, {const_words * 4} bytes")
    lines.append(f"symbols     {len(program.symbols)}")
    for sym in program.symbols:
        shape = "x".join(str(d) for d in sym.shape) or "scalar"
        lines.append(f"  {sym.kind:6s} {sym.name:16s} {sym.dtype}[{shape}] @ {sym.addr:#x}")
    total = Counter(i.mnemonic for i in program.instructions)
    lines.append(f"instructions {len(program.instructions)}: "
                 + ", ".join(f"{k} {v}" for k, v in sorted(total.items())))
    meta_layers = program.meta.get("layers", {}) if isinstance(program.meta, dict) else {}
    if not isinstance(meta_layers, dict):
        meta_layers = {}
    sparsity = layer_sparsity(program)
    lines.append("layers")
    lines.append(f"  {'layer':28s} {'kind':12s} {'pattern':7s} {'density':>7s} {'keep':>5s} "
                 f"{'weight bytes':>12s} {'dense bytes':>12s}  instructions")
    for r in program.debug:
        info = meta_layers.get(r.name, {})
        info = info if isinstance(info, dict) else {}
        sp = sparsity[r.name]
        counts = Counter(i.mnemonic for i in program.instructions[r.start_pc : r.end_pc])
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        density = f"{sp.density:.3f}" if sp.density is not None else "-"
        keep = f"{sp.window_keep:.2f}" if sp.window_keep is not None else "-"
        lines.append(
            f"  {r.name:28s} {r.kind:12s} {sp.pattern or '-':7s} {density:>7s} {keep:>5s} "
            f"{str(info.get('weight_bytes', '-')):>12s} {str(info.get('dense_bytes', '-')):>12s}"
            f"  {r.end_pc - r.start_pc} ({shown})")
    pruned = _pruned_line(meta_layers)
    if pruned:
        lines.append(pruned)
    stored = _stored_bytes_line(meta_layers)
    if stored:
        lines.append(stored)
    other = {k: v for k, v in program.meta.items() if k not in ("layers", "window_keep")}
    if other:
        lines.append("meta        " + ", ".join(f"{k}={v}" for k, v in sorted(other.items())))
    return "\n".join(lines) + "\n"


def _pruned_line(meta_layers: dict) -> str | None:
    """Which weight layers are N:M sparse and which stay dense (META "layers"), in one line:
    `--sparsity N:M` prunes the transformer blocks' linears only, and this says which."""
    patterns = {name: info.get("pattern") for name, info in meta_layers.items()
                if isinstance(info, dict) and isinstance(info.get("pattern"), str)}
    if not patterns:
        return None
    sparse = {name: p for name, p in patterns.items() if p != "dense"}
    if not sparse:
        return f"pruned      none: all {len(patterns)} weight layers dense"
    by_pattern = Counter(sparse.values())
    dense = [name for name, p in patterns.items() if p == "dense"]
    shown = ", ".join(dense[:8]) + (f", ... ({len(dense)} in all)" if len(dense) > 8 else "")
    return (f"pruned      {len(sparse)} of {len(patterns)} weight layers N:M sparse ("
            + ", ".join(f"{n} at {p}" for p, n in sorted(by_pattern.items()))
            + f"); dense: {shown or 'none'}")
