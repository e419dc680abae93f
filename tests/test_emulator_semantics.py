"""Functional semantics of every opcode, against numpy / torch references computed here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator_helpers import ACC, SPAD, TARGET, I, f32bits, program, serialize
from nmc.isa.table import OPS, VBinFn, VRowFn, VUnFn
from nmc.runtime.emulator import run_program
from nmc.runtime.semantics import SEMANTICS

RNG = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def test_every_opcode_has_semantics():
    assert set(SEMANTICS) == {op.mnemonic for op in OPS}


# --------------------------------------------------------------------------------------
# DMA


@pytest.mark.parametrize("mem", [SPAD, ACC])
def test_strided_load_then_contiguous_store(mem):
    x = rand(8, 12)
    # rows 2..5, cols 3..7 of x (row stride 12) -> on-chip block -> contiguous output
    prog = program(
        serialize([
            I("load", mem=mem, local=100, dram=2 * 12 + 3, rows=4, cols=5, stride=12),
            I("store", mem=mem, local=100, dram=1000, rows=4, cols=5, stride=5),
        ]),
        inputs=[("x", (8, 12), 0)],
        outputs=[("y", (4, 5), 1000)],
    )
    y = run_program(prog, {"x": x}, TARGET).outputs["y"]
    np.testing.assert_array_equal(y, x[2:6, 3:8])


def test_strided_store_leaves_other_words_alone():
    x = rand(3, 4)
    base = rand(5, 10)
    # write x into rows 1..3, cols 2..5 of a 5x10 output initialised from a constant
    prog = program(
        serialize([
            I("load", mem=SPAD, local=0, dram=0, rows=3, cols=4, stride=4),
            I("store", mem=SPAD, local=0, dram=500 + 10 + 2, rows=3, cols=4, stride=10),
        ]),
        inputs=[("x", (3, 4), 0)],
        outputs=[("y", (5, 10), 500)],
        constants=[(500, base)],
    )
    y = run_program(prog, {"x": x}, TARGET).outputs["y"]
    expected = base.copy()
    expected[1:4, 2:6] = x
    np.testing.assert_array_equal(y, expected)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6), cols=st.integers(1, 7), pad=st.integers(0, 5),
    r0=st.integers(0, 3), c0=st.integers(0, 3),
)
def test_strided_copy_matches_numpy_slicing(rows, cols, pad, r0, c0):
    stride = cols + c0 + pad
    h = r0 + rows
    x = np.arange(h * stride, dtype=np.float32).reshape(h, stride)
    prog = program(
        serialize([
            I("load", mem=SPAD, local=7, dram=r0 * stride + c0, rows=rows, cols=cols, stride=stride),
            I("store", mem=SPAD, local=7, dram=4000 + c0, rows=rows, cols=cols, stride=stride),
        ]),
        inputs=[("x", (h, stride), 0)],
        outputs=[("y", (rows, stride), 4000)],
    )
    y = run_program(prog, {"x": x}, TARGET, fill=-1.0).outputs["y"]
    expected = np.full((rows, stride), -1.0, dtype=np.float32)
    expected[:, c0 : c0 + cols] = x[r0:, c0 : c0 + cols]
    np.testing.assert_array_equal(y, expected)


# --------------------------------------------------------------------------------------
# Matrix unit


def _matmul_program(m, k, n, *, accumulate_second: bool):
    a_at, w_at, b_at, out_at = 0, m * k, m * k + k * n, 20000
    instrs = [
        I("load", mem=SPAD, local=0, dram=a_at, rows=m, cols=k, stride=k),
        I("load", mem=SPAD, local=4096, dram=w_at, rows=k, cols=n, stride=n),
        I("matmul", a=0, w=4096, out=64, m=m, k=k, n=n),
    ]
    if accumulate_second:
        instrs += [
            I("load", mem=SPAD, local=8192, dram=b_at, rows=k, cols=n, stride=n),
            I("matmul", a=0, w=8192, out=64, m=m, k=k, n=n, accumulate=1),
        ]
    instrs.append(I("store", mem=ACC, local=64, dram=out_at, rows=m, cols=n, stride=n))
    return program(
        serialize(instrs),
        inputs=[("a", (m, k), a_at), ("w", (k, n), w_at), ("b", (k, n), b_at)],
        outputs=[("y", (m, n), out_at)],
    )


@pytest.mark.parametrize("m,k,n", [(16, 32, 16), (5, 7, 3), (1, 1, 1), (20, 40, 33)])
def test_matmul(m, k, n):
    a, w, b = rand(m, k), rand(k, n), rand(k, n)
    y = run_program(_matmul_program(m, k, n, accumulate_second=False),
                    {"a": a, "w": w, "b": b}, TARGET).outputs["y"]
    np.testing.assert_allclose(y, a.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    assert y.dtype == np.float32


def test_matmul_accumulate():
    m, k, n = 8, 24, 12
    a, w, b = rand(m, k), rand(k, n), rand(k, n)
    y = run_program(_matmul_program(m, k, n, accumulate_second=True),
                    {"a": a, "w": w, "b": b}, TARGET).outputs["y"]
    ref = a.astype(np.float64) @ w + a.astype(np.float64) @ b
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_matmul_overwrites_stale_accumulator():
    # accumulate=0 must ignore whatever ACC held before
    m, k, n = 4, 4, 4
    a, w = rand(m, k), rand(k, n)
    prog = _matmul_program(m, k, n, accumulate_second=False)
    y = run_program(prog, {"a": a, "w": w, "b": w}, TARGET, fill=123.0).outputs["y"]
    np.testing.assert_allclose(y, a.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------
# Vector unit: load operands, run one instruction, store the destination.

SRC, SRC2, DST, PARAM = 0, 2048, 4096, 6144  # SPAD addresses
OUT = 30000  # DRAM address of the output


def run_vector(op: Instr, rows: int, cols: int, *, x: np.ndarray, b: np.ndarray | None = None,
               param: np.ndarray | None = None, dst_mem: int = SPAD, dst: int = DST,
               src_mem: int = SPAD) -> np.ndarray:
    """x goes to (src_mem, SRC), b to SPAD SRC2, param to SPAD PARAM; returns dst."""
    inputs = {"x": x}
    syms = [("x", x.shape, 0)]
    instrs = [I("load", mem=src_mem, local=SRC, dram=0, rows=rows, cols=cols, stride=cols)]
    if b is not None:
        inputs["b"] = b
        syms.append(("b", b.shape, 10000))
        instrs.append(I("load", mem=SPAD, local=SRC2, dram=10000, rows=1, cols=b.size, stride=b.size))
    if param is not None:
        inputs["p"] = param
        syms.append(("p", param.shape, 20000))
        instrs.append(I("load", mem=SPAD, local=PARAM, dram=20000, rows=1, cols=param.size,
                        stride=param.size))
    instrs += [op, I("store", mem=dst_mem, local=dst, dram=OUT, rows=rows, cols=cols, stride=cols)]
    prog = program(serialize(instrs), inputs=syms, outputs=[("y", (rows, cols), OUT)])
    return run_program(prog, inputs, TARGET).outputs["y"]


VBIN_REF = {
    VBinFn.ADD: torch.add, VBinFn.SUB: torch.sub, VBinFn.MUL: torch.mul, VBinFn.MAX: torch.maximum,
}


@pytest.mark.parametrize("fn", list(VBinFn))
@pytest.mark.parametrize("bcast", [0, 1])
def test_vbin(fn, bcast):
    rows, cols = 5, 37
    x = rand(rows, cols)
    b = rand(1 if bcast else rows, cols)
    x[0, 0], b[0, 1] = np.nan, np.inf  # NaN and Inf propagate as in torch
    op = I("vbin", fn=fn, dst_mem=SPAD, dst=DST, a_mem=SPAD, a=SRC, b_mem=SPAD, b=SRC2,
           rows=rows, cols=cols, bcast=bcast)
    y = run_vector(op, rows, cols, x=x, b=b)
    ref = VBIN_REF[fn](torch.from_numpy(x), torch.from_numpy(b)).numpy()
    np.testing.assert_array_equal(y, ref)


def test_vbin_mixed_memories_and_in_place():
    # a in ACC, b in SPAD, result written over a (in place) in ACC
    rows, cols = 4, 16
    x, b = rand(rows, cols), rand(rows, cols)
    op = I("vbin", fn=VBinFn.ADD, dst_mem=ACC, dst=SRC, a_mem=ACC, a=SRC, b_mem=SPAD, b=SRC2,
           rows=rows, cols=cols)
    y = run_vector(op, rows, cols, x=x, b=b, src_mem=ACC, dst_mem=ACC, dst=SRC)
    np.testing.assert_array_equal(y, x + b)


def _torch_vun(fn: VUnFn, x: torch.Tensor, scale: float) -> torch.Tensor:
    F = torch.nn.functional
    return {
        VUnFn.COPY: lambda: x.clone(),
        VUnFn.GELU: lambda: F.gelu(x),
        VUnFn.GELU_TANH: lambda: F.gelu(x, approximate="tanh"),
        VUnFn.RELU: lambda: F.relu(x),
        VUnFn.EXP: lambda: torch.exp(x),
        VUnFn.SCALE: lambda: x * scale,
    }[fn]()


@pytest.mark.parametrize("fn", [f for f in VUnFn if f != VUnFn.QUANT])  # quant: test_int8_isa
def test_vun(fn):
    rows, cols = 7, 50
    x = rand(rows, cols) * 3
    x[0, :3] = [np.nan, np.inf, -np.inf]
    scale = 0.125
    op = I("vun", fn=fn, dst_mem=SPAD, dst=DST, src_mem=SPAD, src=SRC, rows=rows, cols=cols,
           imm=f32bits(scale))
    y = run_vector(op, rows, cols, x=x)
    ref = _torch_vun(fn, torch.from_numpy(x), scale).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-7, equal_nan=True)


def test_vun_from_acc_to_spad():
    rows, cols = 3, 16
    x = rand(rows, cols)
    op = I("vun", fn=VUnFn.RELU, dst_mem=SPAD, dst=DST, src_mem=ACC, src=SRC, rows=rows, cols=cols)
    y = run_vector(op, rows, cols, x=x, src_mem=ACC)
    np.testing.assert_array_equal(y, np.maximum(x, 0))


@pytest.mark.parametrize("rows,cols", [(6, 64), (1, 3), (17, 192)])
def test_vrow_layernorm(rows, cols):
    x = rand(rows, cols) * 4 + 1
    gamma, beta = rand(cols), rand(cols)
    eps = 1e-6
    op = I("vrow", fn=VRowFn.LAYERNORM, dst_mem=SPAD, dst=DST, src_mem=SPAD, src=SRC,
           param=PARAM, rows=rows, cols=cols, imm=f32bits(eps))
    y = run_vector(op, rows, cols, x=x, param=np.concatenate([gamma, beta]))
    ref = torch.nn.functional.layer_norm(
        torch.from_numpy(x), (cols,), torch.from_numpy(gamma), torch.from_numpy(beta), eps
    ).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 0.125])
def test_vrow_softmax(scale):
    rows, cols = 9, 197
    x = rand(rows, cols) * 10
    x[1] = -np.inf  # a fully masked row gives NaN, as in torch
    x[2, 5] = np.inf
    op = I("vrow", fn=VRowFn.SOFTMAX, dst_mem=ACC, dst=DST, src_mem=SPAD, src=SRC,
           rows=rows, cols=cols, imm=f32bits(scale))
    y = run_vector(op, rows, cols, x=x, dst_mem=ACC)
    ref = torch.softmax(torch.from_numpy(x) * scale, dim=-1).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-7, equal_nan=True)


def test_float64_inputs_are_rounded_to_float32():
    x = RNG.standard_normal((2, 3))  # float64
    prog = program(
        serialize([
            I("load", mem=SPAD, local=0, dram=0, rows=1, cols=6, stride=6),
            I("store", mem=SPAD, local=0, dram=100, rows=1, cols=6, stride=6),
        ]),
        inputs=[("x", (2, 3), 0)],
        outputs=[("y", (2, 3), 100)],
    )
    y = run_program(prog, {"x": x}, TARGET).outputs["y"]
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x.astype(np.float32))
