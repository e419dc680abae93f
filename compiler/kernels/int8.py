"""What the int8 form of the matrix kernels shares (docs/INT8.md): the stored size of an
int8 weight, where its rescale table lies, and the quantisation pre-pass of an input.

An int8 weight parameter is stored as its int8 W^T (dense or `nm_pack:N:M`, four to a
word: `nm_format.packed_words_int8`) followed by the layer's rescale table (per output
channel the int32 bias and the fp32 scale s_x * s_w, interleaved: `quant.rescale_table`),
so one DRAM buffer holds everything the layer's constants are, and the emitter writes it
from the fp32 weight, the bias and the op's `nm.quant`.

The input of an int8 matmul is fp32 in DRAM; the pre-pass quantises it once into DRAM
scratch ([M x K/4] words): blocks of rows are loaded, quantised in place on the vector
unit (`vun quant`, multiplying by fp32(1/s_x)) and stored, and the matmul tiles then read
int8 A blocks, a quarter of the bytes.
"""

from __future__ import annotations

from nmc.common import nm_format
from nmc.common.nm_format import Pattern
from nmc.isa.table import Mem, Unit, VUnFn, f32_bits
from nmc.isa.target import Target

from nmc.compiler.kernels.common import Matrix2D, OnChipAllocator, align, block_fields
from nmc.compiler.kernels.walk import Walk


def int8_shape(k: int, n_out: int) -> bool:
    """Whether a matmul of reduction `k` and `n_out` outputs can run in int8 (both pack
    four to a word): the rule of the quantize pass and of the costs the searches see."""
    return k % 4 == 0 and n_out % 4 == 0


def stored_words(n_out: int, k: int, pattern: Pattern) -> int:
    """DRAM words of an int8 weight [n_out, k]: the int8 W^T, then the rescale table."""
    return nm_format.packed_words_int8(k, n_out, pattern) + 2 * n_out


def rescale_offset(n_out: int, k: int, pattern: Pattern) -> int:
    """Where the rescale table starts, in words from the weight's address."""
    return nm_format.packed_words_int8(k, n_out, pattern)


def quantized_words(M: int, K: int) -> int:
    """DRAM scratch of the quantised input [M x K] int8."""
    return M * K // 4


def prepass_rows(M: int, K: int, target: Target) -> int:
    """Rows of the input quantised per block: two blocks of fp32 rows in half of SPAD."""
    return max(1, min(M, (target.spad_words // 4) // align(K)))


def quantize_prepass(out: Walk, M: int, K: int, x: int, xq: int, inv_scale: float,
                     target: Target) -> int:
    """Issue the pre-pass (module docstring) of X [M x K] fp32 at `x` into `xq`; returns
    the cycles the matrix unit waits before the first int8 A block can be read (the load
    queue runs the whole pre-pass first: its loads, then one block's quant and store)."""
    rows = prepass_rows(M, K, target)
    ring = OnChipAllocator(target).ring(Mem.SPAD, rows * K)
    X, Xq = Matrix2D(x, M, K), Matrix2D(xq, M, K // 4)
    imm = f32_bits(float(inv_scale))
    last = 0
    for m in out.tiles(M, rows):
        buf = ring.next()
        out.add("load", **block_fields(X, m.start, 0, m.length, K, Mem.SPAD, buf))
        quant = out.add("vun", fn=VUnFn.QUANT, dst_mem=Mem.SPAD, dst=buf, src_mem=Mem.SPAD,
                        src=buf, rows=m.length, cols=K, imm=imm)
        store = out.add("store", **block_fields(Xq, m.start, 0, m.length, K // 4, Mem.SPAD,
                                                buf))
        last = quant + store
    return out.busy[Unit.LOAD] + last
