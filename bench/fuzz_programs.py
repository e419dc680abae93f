"""Fuzz the prog.bin reader and the emulator: nothing a file can hold may crash them.

    .venv/bin/python bench/fuzz_programs.py                  # 100,000 cases, seed 0
    .venv/bin/python bench/fuzz_programs.py -n 20000 --seed 7 --jobs 2

Every case is a byte string that `nmc run` could be handed: a valid program (built here, no
compiler needed) mutated at the byte level (bit flips, truncation, appended or overwritten
bytes, header fields), at the section level with the table and CRCs fixed up so the inner
checks are reached (section swaps, drops, duplicates, flips inside a body, garbled JSON and
constant records, random or random-but-encodable instruction words), or a stream of random
encodable instructions (random fields, masks, with or without halt). Each case is read with
`program_from_bytes` and, if that succeeds, disassembled and assembled back (which must
give the same program) and run with `run_program` on a small target (`SMALL_TARGET`:
sta_ref with a 64 Ki-word DRAM) under an instruction budget, once through the emulator's
fast path and once through its reference simulation (`fast=False`), which must agree
exactly (the same error message, or the same outputs bit for bit, cycles and statistics).

The only allowed outcomes are a `RunResult` or an `NmcError` subclass; anything else (an
IndexError, a numpy error, a MemoryError, a hang, the two simulations disagreeing) is a bug. Cases are reproducible: case i of
seed s is generated from `random.Random(f"{s}:{i}")`. tests/test_robust_fuzz.py runs the same
generator under hypothesis (`st.randoms()`), so failures shrink there.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import inspect
import os
import platform
import random
import struct
import sys
import time
import traceback
import zlib
from pathlib import Path

import numpy as np

from nmc.isa.asm import assemble, disassemble
from nmc.isa.container import (
    MAGIC, LayerRange, Program, Section, Symbol, canonical_json, program_from_bytes,
    program_to_bytes,
)
from nmc.common.errors import NmcError
from nmc.isa.table import OPS, Field, Instr, Mem, QUEUE_UNITS, VBinFn, VRowFn, VUnFn, f32_bits
from nmc.isa.target import load_target
from nmc.runtime.emulator import run_program

SMALL_TARGET = dataclasses.replace(load_target("sta_ref"), dram_words=1 << 16)
"""sta_ref (same name and id, so its programs run) with a DRAM small enough that every
case allocates little memory; SPAD and ACC as on sta_ref."""

BUDGET = 64
"""Instructions a case may run before halt (`run_program(max_instructions=...)`)."""

_HEADER = struct.Struct("<8sHHI32sQI")
_SECTION = struct.Struct("<IQQI")
_BIT = {u: 1 << i for i, u in enumerate(QUEUE_UNITS)}
SPAD, ACC, DRAM = int(Mem.SPAD), int(Mem.ACC), int(Mem.DRAM)


# ------------------------------------------------------------------------------ valid programs


def _serialize(instrs: list[Instr]) -> list[Instr]:
    """Tokens so that each instruction starts after the previous one (different units)."""
    out = list(instrs)
    for i in range(1, len(out)):
        prev, cur = out[i - 1], out[i]
        if prev.unit != cur.unit and prev.unit in _BIT and cur.unit in _BIT:
            out[i - 1] = prev.with_fields(signal=prev["signal"] | _BIT[cur.unit])
            out[i] = cur.with_fields(wait=cur["wait"] | _BIT[prev.unit])
    return out


def _f32(x: float) -> int:
    return f32_bits(x)


def valid_program(rng: random.Random) -> Program:
    """A small program that runs cleanly: y = post(x . W) for an input x [m x k], a constant
    W [k x n] (and a row of parameters), through every unit and most functions."""
    m, k, n = rng.randint(1, 8), rng.randint(1, 8), rng.randint(1, 8)
    x_addr, w_addr, p_addr = 0, 64, 128
    y_addr = 256 + rng.randrange(0, 64)
    dram_words = y_addr + m * n + rng.randrange(0, 512)
    a, w, o, p = 0, 256, 512, 768  # SPAD buffers
    out = [
        Instr.make("load", mem=SPAD, local=a, dram=x_addr, rows=m, cols=k, stride=k),
        Instr.make("load", mem=SPAD, local=w, dram=w_addr, rows=k, cols=n, stride=n),
        Instr.make("matmul", a=a, w=w, out=0, m=m, k=k, n=n),
    ]
    post = rng.choice(["copy", "vbin", "vun", "layernorm", "softmax"])
    if post == "vbin":
        out.append(Instr.make("load", mem=SPAD, local=p, dram=p_addr, rows=1, cols=n, stride=n))
        out.append(Instr.make("vbin", fn=rng.choice(list(VBinFn)), dst_mem=SPAD, dst=o,
                              a_mem=ACC, a=0, b_mem=SPAD, b=p, rows=m, cols=n, bcast=1))
    elif post == "vun":
        # quant writes int8 four to a word (cols a multiple of 4): not a same-shape post-op
        fns = [fn for fn in VUnFn if fn != VUnFn.QUANT]
        out.append(Instr.make("vun", fn=rng.choice(fns), dst_mem=SPAD, dst=o,
                              src_mem=ACC, src=0, rows=m, cols=n, imm=_f32(rng.uniform(-2, 2))))
    elif post in ("layernorm", "softmax"):
        out.append(Instr.make("load", mem=SPAD, local=p, dram=p_addr, rows=1, cols=2 * n,
                              stride=2 * n))
        out.append(Instr.make("vrow", fn=VRowFn[post.upper()], dst_mem=SPAD, dst=o, src_mem=ACC,
                              src=0, param=p, rows=m, cols=n, imm=_f32(1e-5)))
    else:
        out.append(Instr.make("vun", fn=VUnFn.COPY, dst_mem=SPAD, dst=o, src_mem=ACC, src=0,
                              rows=m, cols=n))
    out.append(Instr.make("store", mem=SPAD, local=o, dram=y_addr, rows=m, cols=n, stride=n))
    instrs = _serialize(out) + [Instr.make("halt")]
    consts = [
        (w_addr, np.array([rng.uniform(-1, 1) for _ in range(k * n)], np.float32)),
        (p_addr, np.array([rng.uniform(-1, 1) for _ in range(2 * n)], np.float32)),
    ]
    return Program(
        target_name=SMALL_TARGET.name, target_id=SMALL_TARGET.id, dram_words=dram_words,
        instructions=instrs, constants=consts,
        symbols=[Symbol("x", "input", (m, k), "f32", x_addr),
                 Symbol("y", "output", (m, n), "f32", y_addr)],
        debug=[LayerRange("mm", "linear", 0, 3), LayerRange("post", post, 3, len(instrs) - 1)],
        meta={"fuzz": True, "post": post},
    )


# ------------------------------------------------------------------------------ random instructions


def _field_value(rng: random.Random, f: Field, sizes: dict[str, int]) -> int:
    if f.enum is Mem and rng.random() < 0.85:
        return rng.choice([SPAD, ACC])
    if f.enum is not None:
        if rng.random() < 0.9:
            return int(rng.choice(list(f.enum)))
        return rng.randrange(0, f.max_value + 1)  # may not encode: the caller skips those
    if f.kind == "mask":
        return rng.randrange(0, f.max_value + 1)
    if f.kind == "f32":
        return rng.choice([_f32(rng.uniform(-4, 4)), rng.getrandbits(32), _f32(1e-5),
                           0x7FC00000, 0x7F800000])
    r = rng.random()
    if r < 0.6:
        return min(rng.randrange(0, 33), f.max_value)  # small: shapes, low addresses
    if r < 0.85:
        return min(rng.randrange(0, sizes["spad"]), f.max_value)  # on-chip range
    if r < 0.95:
        return min(rng.randrange(0, sizes["dram"] + 64), f.max_value)  # around the DRAM end
    return rng.randrange(0, f.max_value + 1)  # anything


def random_instr(rng: random.Random, sizes: dict[str, int]) -> Instr:
    """A random instruction that encodes (fields in range, enum fields in their enum)."""
    while True:
        spec = rng.choice(OPS)
        values = {f.name: _field_value(rng, f, sizes) for f in spec.all_fields}
        own = _BIT.get(spec.unit, 0xF)  # halt (no queue): masks must be 0
        for mask in ("wait", "signal"):
            if rng.random() < 0.85:  # mostly legal masks, so the simulation is reached
                values[mask] &= ~own & 0xF
        try:
            instr = Instr.make(spec.mnemonic, **values)
            from nmc.isa.encoding import encode

            encode(instr)
            return instr
        except (ValueError, NmcError):
            continue


def random_stream_program(rng: random.Random) -> Program:
    sizes = {"spad": SMALL_TARGET.spad_words, "dram": rng.choice([256, 4096, 1 << 16])}
    instrs = [random_instr(rng, sizes) for _ in range(rng.randint(0, 12))]
    if rng.random() < 0.5:
        instrs = _serialize(instrs)
    if rng.random() < 0.85:
        instrs.append(Instr.make("halt"))
    symbols = []
    if rng.random() < 0.5:
        symbols.append(Symbol("x", "input", (rng.randint(0, 4), rng.randint(0, 4)), "f32",
                              rng.randrange(0, 64)))
    if rng.random() < 0.5:
        symbols.append(Symbol("y", "output", (rng.randint(0, 4),), "f32", rng.randrange(0, 64)))
    return Program(SMALL_TARGET.name, SMALL_TARGET.id, sizes["dram"], instrs, [], symbols)


# ------------------------------------------------------------------------------ byte-level surgery


@dataclasses.dataclass
class _Image:
    """A prog.bin taken apart: header fields and (kind, body) sections in file order."""

    fields: list  # magic, version, flags, target id, name, dram_words, count
    sections: list[tuple[int, bytes]]

    @staticmethod
    def of(data: bytes) -> "_Image":
        fields = list(_HEADER.unpack_from(data))
        sections = []
        for i in range(fields[6]):
            kind, off, size, _ = _SECTION.unpack_from(data, _HEADER.size + i * _SECTION.size)
            sections.append((kind, data[off : off + size]))
        return _Image(fields, sections)

    def to_bytes(self, fix_crc: bool = True, crcs: list[int] | None = None) -> bytes:
        fields = list(self.fields)
        fields[6] = len(self.sections)
        offset = _HEADER.size + _SECTION.size * len(self.sections)
        table, bodies = [], []
        for i, (kind, body) in enumerate(self.sections):
            crc = zlib.crc32(body) if fix_crc or crcs is None else crcs[i]
            table.append(_SECTION.pack(kind, offset, len(body), crc))
            bodies.append(body)
            offset += len(body)
        return b"".join([_HEADER.pack(*fields), *table, *bodies])

    def index(self, kind: Section) -> int | None:
        for i, (k, _) in enumerate(self.sections):
            if k == kind:
                return i
        return None


def _flip_bits(rng: random.Random, data: bytes, count: int) -> bytes:
    buf = bytearray(data)
    if not buf:
        return data
    for _ in range(count):
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


_EDGE_U64 = [0, 1, 2, 31, 32, 33, 60, 64, 255, 256, 1 << 15, 1 << 16, (1 << 16) + 1,
             1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


def _edge(rng: random.Random, bits: int) -> int:
    return rng.choice([v for v in _EDGE_U64 if v < 1 << bits] + [rng.getrandbits(bits)])


def _garble_json(rng: random.Random, value):
    """Randomly replace parts of a JSON value (numbers to edge values, types swapped)."""
    choices = [0, -1, 1, 2**31, 2**63, 2**64, 10**30, -(2**63), 1.5, "s", None, True, [], {},
               [2**40, 0], [10**30, 0], [0, 2**62, 2**62], [1] * 70, [0] * 40]
    if isinstance(value, dict):
        out = dict(value)
        if out and rng.random() < 0.8:
            key = rng.choice(sorted(out))
            out[key] = _garble_json(rng, out[key]) if rng.random() < 0.6 else rng.choice(choices)
        if rng.random() < 0.2:
            out[rng.choice(["extra", "name", "kind", "addr"])] = rng.choice(choices)
        if out and rng.random() < 0.1:
            out.pop(rng.choice(sorted(out)))
        return out
    if isinstance(value, list):
        out = list(value)
        if out and rng.random() < 0.8:
            i = rng.randrange(len(out))
            out[i] = _garble_json(rng, out[i]) if rng.random() < 0.7 else rng.choice(choices)
        if rng.random() < 0.2:
            out.append(rng.choice(choices) if rng.random() < 0.5 else (out[0] if out else 1))
        return out
    return rng.choice(choices)


def _mutate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One random mutation of the valid prog.bin `data`: (name, new bytes)."""
    img = _Image.of(data)
    kind = rng.choice([
        "bitflip", "bitflip", "truncate", "append", "overwrite", "header", "section-swap",
        "section-drop", "section-dup", "section-reorder", "body-flip+crc", "instr-word",
        "instr-word", "instr-valid", "instr-valid", "instr-drop-halt", "json", "json",
        "const", "crc-only",
    ])
    if kind == "bitflip":
        return kind, _flip_bits(rng, data, rng.randint(1, 8))
    if kind == "truncate":
        return kind, data[: rng.randrange(0, len(data))]
    if kind == "append":
        return kind, data + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))
    if kind == "overwrite":
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(buf))
            buf[i] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.getrandbits(8)])
        return kind, bytes(buf)
    if kind == "header":
        i = rng.choice([0, 1, 2, 3, 4, 5, 6])
        if i == 0:
            img.fields[0] = rng.choice([b"NMCPROG\x01", b"\0" * 8, MAGIC[:7] + b"X"])
        elif i == 4:
            img.fields[4] = rng.choice([b"", b"other", b"sta_ref\0x", b"\xff\xfe", b"x" * 32])
        elif i == 6:
            raw = bytearray(img.to_bytes())
            struct.pack_into("<I", raw, 56, _edge(rng, 32))
            return kind, bytes(raw)
        else:
            img.fields[i] = _edge(rng, {1: 16, 2: 16, 3: 32, 5: 64}[i])
        return kind, img.to_bytes()
    if kind in ("section-swap", "section-dup", "section-drop", "section-reorder"):
        secs = img.sections
        if kind == "section-swap" and len(secs) >= 2:
            i, j = rng.sample(range(len(secs)), 2)
            (ki, bi), (kj, bj) = secs[i], secs[j]
            secs[i], secs[j] = (ki, bj), (kj, bi)  # kinds stay, bodies trade places
        elif kind == "section-dup" and secs:
            secs.insert(rng.randrange(len(secs) + 1), rng.choice(secs))
        elif kind == "section-drop" and secs:
            secs.pop(rng.randrange(len(secs)))
        else:
            rng.shuffle(secs)
        return kind, img.to_bytes()
    if kind == "body-flip+crc":
        i = rng.randrange(len(img.sections))
        k, body = img.sections[i]
        img.sections[i] = (k, _flip_bits(rng, body, rng.randint(1, 4)))
        return kind, img.to_bytes()
    if kind == "crc-only":
        crcs = [zlib.crc32(b) for _, b in img.sections]
        crcs[rng.randrange(len(crcs))] ^= 1 << rng.randrange(32)
        return kind, img.to_bytes(fix_crc=False, crcs=crcs)
    i = img.index(Section.INSTR)
    words = [img.sections[i][1][o : o + 32] for o in range(0, len(img.sections[i][1]), 32)]
    if kind == "instr-word":
        for _ in range(rng.randint(1, 3)):
            j = rng.randrange(len(words) + 1)
            word = bytes(rng.getrandbits(8) for _ in range(32))
            if rng.random() < 0.5:  # keep a known opcode so the field checks are reached
                word = bytes([rng.choice(OPS).opcode]) + word[1:]
            words[j : j + 1] = [word]
    elif kind == "instr-valid":
        from nmc.isa.encoding import encode

        sizes = {"spad": SMALL_TARGET.spad_words, "dram": 1024}
        for _ in range(rng.randint(1, 3)):
            j = rng.randrange(len(words))
            words[j] = encode(random_instr(rng, sizes))
    elif kind == "instr-drop-halt":
        words = words[:-1] if rng.random() < 0.7 else words[:-1] + words[:1]
    if kind.startswith("instr"):
        img.sections[i] = (int(Section.INSTR), b"".join(words))
        return kind, img.to_bytes()
    if kind == "json":
        import json

        j = img.index(rng.choice([Section.SYMBOLS, Section.DEBUG, Section.META]))
        if j is None:
            return kind, data
        k, body = img.sections[j]
        if rng.random() < 0.15:
            text = rng.choice([b"", b"[", b"{\"a\":1,\"a\":2}", b"[NaN]", b"1e999", b"\xff",
                               b"[" * 5000, b"[1" + b"0" * 5000 + b"]"])
        else:
            text = canonical_json(_garble_json(rng, json.loads(body))).encode()
        img.sections[j] = (k, text)
        return kind, img.to_bytes()
    # const: rewrite a record header (address, count) or cut the section
    j = img.index(Section.CONST)
    k, body = img.sections[j]
    buf = bytearray(body)
    if buf and rng.random() < 0.7:
        struct.pack_into("<QQ", buf, 0, _edge(rng, 64) if rng.random() < 0.5 else struct.unpack_from("<Q", buf)[0],
                         _edge(rng, 64) if rng.random() < 0.5 else struct.unpack_from("<Q", buf, 8)[0])
    else:
        buf = buf[: rng.randrange(len(buf) + 1)]
    img.sections[j] = (k, bytes(buf))
    return kind, img.to_bytes()


# ------------------------------------------------------------------------------ cases


def random_stream_case(rng: random.Random) -> tuple[str, bytes]:
    """A program of random encodable instructions (random fields and masks, halt or not)."""
    return "random-stream", program_to_bytes(random_stream_program(rng))


def mutated_case(rng: random.Random) -> tuple[str, bytes]:
    """A valid program, mutated once (sometimes twice) or, one time in 13, left valid."""
    data = program_to_bytes(valid_program(rng))
    if rng.random() < 1 / 13:
        return "valid", data
    name, data = _mutate(rng, data)
    if rng.random() < 0.15:  # a second mutation on top
        try:
            name2, data = _mutate(rng, data)
            name = f"{name}+{name2}"
        except Exception:  # the first mutation broke the layout the second one parses
            pass
    return name, data


def generate_case(rng: random.Random) -> tuple[str, bytes]:
    """(what was done, prog.bin bytes) for one fuzz case: 30% random streams, 70% mutants."""
    return random_stream_case(rng) if rng.random() < 0.3 else mutated_case(rng)


def _inputs(program: Program, rng: random.Random) -> dict[str, np.ndarray]:
    if program.dram_words > SMALL_TARGET.dram_words:
        return {}  # the run refuses the program first; do not allocate its shapes here
    out = {}
    for s in program.symbols:
        if s.kind == "input":
            x = np.full(s.shape, 0.5, np.float32)
            if x.size and rng.random() < 0.2:
                x.reshape(-1)[0] = rng.choice([np.nan, np.inf, -np.inf])
            out[s.name] = x
    return out


def run_case(data: bytes, rng: random.Random, budget: int = BUDGET) -> str:
    """Read and run one case. Returns "ok" or "error:<NmcError subclass>"; any other
    exception propagates (that is a bug)."""
    try:
        program = program_from_bytes(data, "fuzz.bin")
    except NmcError as e:
        return f"reject:{type(e).__name__}"
    # whatever the reader accepts, `nmc disasm` prints and `nmc asm` reads back unchanged
    if assemble(disassemble(program), "fuzz.s") != program:
        raise AssertionError("assemble(disassemble(p)) != p")
    inputs = _inputs(program, rng)
    got = _outcome(program, inputs, budget, {})
    if _HAS_FAST:  # the fast path must agree with the reference simulation exactly
        want = _outcome(program, inputs, budget, {"fast": False})
        if got != want:
            raise AssertionError(f"fast path {str(got)[:300]} != reference {str(want)[:300]}")
    return got[0]


_HAS_FAST = "fast" in inspect.signature(run_program).parameters


def _outcome(program: Program, inputs: dict, budget: int, kw: dict) -> tuple:
    """("ok", cycles, outputs' bytes, ...) or ("error:<class>", message)."""
    try:
        r = run_program(program, inputs, SMALL_TARGET, max_instructions=budget, **kw)
    except NmcError as e:
        return f"error:{type(e).__name__}", str(e)
    outputs = {k: (v.shape, v.tobytes()) for k, v in r.outputs.items()}
    return ("ok", r.total_cycles, outputs, r.busy_cycles, r.stall_cycles, r.leftover_tokens,
            r.instructions_executed)


def check_case(rng: random.Random, generate=generate_case) -> tuple[str, str]:
    """Generate and run one case; (mutation, outcome). Raises AssertionError on a bug."""
    name, data = generate(rng)
    try:
        return name, run_case(data, rng)
    except Exception as e:
        raise AssertionError(
            f"fuzz case ({name}, {len(data)} bytes) raised {type(e).__name__}: {e}\n"
            f"bytes: {data.hex()}"
        ) from e


# ------------------------------------------------------------------------------ main


def _worker(args: tuple[int, int, int]) -> tuple[collections.Counter, collections.Counter, list]:
    seed, start, stop = args
    outcomes, kinds, failures = collections.Counter(), collections.Counter(), []
    for i in range(start, stop):
        rng = random.Random(f"{seed}:{i}")
        try:
            name, outcome = check_case(rng)
        except AssertionError as e:
            failures.append((i, str(e).splitlines()[0], traceback.format_exc()))
            continue
        outcomes[outcome] += 1
        kinds[name.split("+")[0]] += 1
    return outcomes, kinds, failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--cases", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--chunk", type=int, default=500)
    args = p.parse_args(argv)

    chunks = [(args.seed, s, min(s + args.chunk, args.cases)) for s in range(0, args.cases, args.chunk)]
    outcomes, kinds, failures = collections.Counter(), collections.Counter(), []
    t0 = time.time()
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            results = pool.imap_unordered(_worker, chunks)
            for done, (o, k, f) in enumerate(results, 1):
                outcomes.update(o), kinds.update(k), failures.extend(f)
                print(f"  {min(done * args.chunk, args.cases)} cases, {time.time() - t0:.0f} s, "
                      f"{len(failures)} failures", file=sys.stderr, flush=True)
    else:
        for done, chunk in enumerate(chunks, 1):
            o, k, f = _worker(chunk)
            outcomes.update(o), kinds.update(k), failures.extend(f)
            print(f"  {chunk[2]} cases, {time.time() - t0:.0f} s, {len(failures)} failures",
                  file=sys.stderr, flush=True)
    elapsed = time.time() - t0

    print(f"fuzz_programs: {args.cases} cases, seed {args.seed}, {args.jobs} job(s), "
          f"{elapsed:.0f} s ({args.cases / elapsed:.0f} cases/s) on {platform.node() or '?'} "
          f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numpy {np.__version__})")
    print(f"failures (not a RunResult and not an NmcError): {len(failures)}")
    for i, head, _ in failures[:20]:
        print(f"  case {i}: {head}")
    print("outcomes:")
    for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {k:40s} {v}")
    print("cases by generator/mutation:")
    for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {k:40s} {v}")
    if failures:
        print("\nfirst failure:\n" + failures[0][2], file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
