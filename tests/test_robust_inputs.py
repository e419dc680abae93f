"""Bad inputs given to `nmc run`: wrong shape or dtype, missing or unreadable files, .npy
files holding pickled objects (never unpickled), and the NaN/Inf policy (accepted and
propagated as PyTorch does; docs/ROBUSTNESS.md). One line `nmc: error: ...`, exit status 1,
no output written (issue 4, class "run inputs")."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from robust_helpers import built, cli, expect_error, expect_process_error, run_nmc

SHAPE = (1, 9, 32)


@pytest.fixture()
def prog(tmp_path_factory) -> Path:
    return built(tmp_path_factory) / "prog.bin"


def _run_error(capsys, prog: Path, tmp_path: Path, inputs: list, *fragments: str) -> str:
    out = tmp_path / "y.npy"
    argv = ["run", prog, "-o", out]
    for item in inputs:
        argv += ["--input", item]
    line = expect_error(capsys, argv, *fragments)
    assert not out.exists()
    return line


def _save(tmp_path: Path, name: str, array) -> Path:
    path = tmp_path / name
    np.save(path, array, allow_pickle=True)
    return path


def _reference(tmp_path_factory, x: np.ndarray) -> np.ndarray:
    ep = torch.export.load(str(built(tmp_path_factory) / "model.pt"))
    with torch.no_grad():
        return ep.module()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("shape", [(9, 32), (1, 32, 9), (1, 9, 33), (2, 9, 32), (), (288,)])
def test_wrong_shape(capsys, tmp_path, prog, shape):
    path = _save(tmp_path, "x.npy", np.zeros(shape, np.float32))
    _run_error(capsys, prog, tmp_path, [path],
               f"input 'x' has shape {shape}; expected {SHAPE}")


def test_wrong_shape_is_refused_before_reading_the_data(capsys, tmp_path, prog):
    """A header claiming 4 TB of data: refused from the header, nothing allocated."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    path = tmp_path / "huge.npy"
    path.write_bytes(buf.getvalue() + b"\0" * 64)
    _run_error(capsys, prog, tmp_path, [path],
               f"input 'x' has shape (1000000000000,); expected {SHAPE}")


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex64,
                                   [("a", "<f4")]], ids=str)
def test_wrong_dtype(capsys, tmp_path, prog, dtype):
    path = _save(tmp_path, "x.npy", np.zeros(SHAPE, dtype))
    _run_error(capsys, prog, tmp_path, [path], "input 'x' has dtype ", "; expected f32")


@pytest.mark.parametrize("dtype", [np.float16, np.float64, ">f4"], ids=str)
def test_other_float_dtypes_are_converted(capsys, tmp_path, prog, dtype, tmp_path_factory):
    x = np.load(built(tmp_path_factory) / "x.npy")
    path = _save(tmp_path, "x.npy", x.astype(dtype))
    rc, _, err = cli(capsys, "run", prog, "--input", path, "-o", tmp_path / "y.npy")
    assert rc == 0, err
    want = _reference(tmp_path_factory, x.astype(dtype).astype(np.float32))
    got = np.load(tmp_path / "y.npy")
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_nan_and_inf_are_accepted_and_propagate_like_pytorch(capsys, tmp_path, prog,
                                                             tmp_path_factory):
    x = np.load(built(tmp_path_factory) / "x.npy").copy()
    x[0, 2, 5] = np.nan
    x[0, 4, 0] = np.inf
    x[0, 6, 7] = -np.inf
    path = _save(tmp_path, "x.npy", x)
    rc, _, err = cli(capsys, "run", prog, "--input", path, "-o", tmp_path / "y.npy")
    assert rc == 0, err
    got, want = np.load(tmp_path / "y.npy"), _reference(tmp_path_factory, x)
    # the rows holding a NaN/Inf become NaN (layer norm mixes the row), the others are exact
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[0, [2, 4, 6]]).all() and np.isfinite(got[0, [0, 1, 3, 5, 7, 8]]).all()
    ok = np.isfinite(want)
    assert np.abs(got[ok] - want[ok]).max() <= 1e-4 * np.abs(want[ok]).max()


def test_missing_input_file(capsys, tmp_path, prog):
    _run_error(capsys, prog, tmp_path, [tmp_path / "nope.npy"],
               f"cannot read input '{tmp_path / 'nope.npy'}': No such file or directory")


def test_directory_as_input(capsys, tmp_path, prog):
    _run_error(capsys, prog, tmp_path, [tmp_path],
               f"cannot read input '{tmp_path}': Is a directory")


def test_npy_with_pickled_objects_is_not_unpickled(capsys, tmp_path, prog):
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = _save(tmp_path, "x.npy", np.array([Evil()], dtype=object))
    _run_error(capsys, prog, tmp_path, [path], "holds Python objects (dtype object)",
               "does not unpickle")
    assert not marker.exists()


def test_plain_pickle_named_npy(capsys, tmp_path, prog):
    path = tmp_path / "x.npy"
    path.write_bytes(pickle.dumps(np.zeros(SHAPE, np.float32)))
    _run_error(capsys, prog, tmp_path, [path], "it is a pickle; nmc reads inputs saved with "
               "np.save only")


def test_npz_archive(capsys, tmp_path, prog):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros(SHAPE, np.float32))
    _run_error(capsys, prog, tmp_path, [path], "it is an .npz archive",
               "--input NAME=FILE.npy")


def test_text_file(capsys, tmp_path, prog):
    path = tmp_path / "x.npy"
    path.write_text("1 2 3\n")
    _run_error(capsys, prog, tmp_path, [path], "it is not a .npy file")


def test_truncated_npy(capsys, tmp_path, prog):
    data = io.BytesIO()
    np.save(data, np.zeros(SHAPE, np.float32))
    path = tmp_path / "x.npy"
    path.write_bytes(data.getvalue()[:300])
    _run_error(capsys, prog, tmp_path, [path], f"cannot read input '{path}': ",
               "could only read")


def test_corrupt_npy_header(capsys, tmp_path, prog):
    path = tmp_path / "x.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4 }\n")
    _run_error(capsys, prog, tmp_path, [path], f"cannot read input '{path}': ")


def test_missing_unknown_and_repeated_inputs(capsys, tmp_path, prog, tmp_path_factory):
    x = built(tmp_path_factory) / "x.npy"
    _run_error(capsys, prog, tmp_path, [], "missing input(s) 'x' (the program takes: "
               "x[1, 9, 32])")
    _run_error(capsys, prog, tmp_path, [f"y={x}"], "missing input(s) 'x'; unexpected input(s) 'y'")
    _run_error(capsys, prog, tmp_path, [f"x={x}", f"x={x}"],
               f"input 'x' is given twice (--input x={x})")


def test_console_script_wrong_shape_and_pickle(tmp_path, prog):
    path = _save(tmp_path, "x.npy", np.zeros((3, 3), np.float32))
    proc = run_nmc("run", prog, "--input", path)
    expect_process_error(proc, "input 'x' has shape (3, 3); expected (1, 9, 32)")
    path = _save(tmp_path, "o.npy", np.array([{"a": 1}], dtype=object))
    proc = run_nmc("run", prog, "--input", path)
    expect_process_error(proc, "holds Python objects")
