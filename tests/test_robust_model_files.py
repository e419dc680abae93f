"""Bad model files given to `nmc compile`: one line `nmc: error: ...`, exit status 1, no
traceback, no prog.bin written (issue 4, class "model files")."""

from __future__ import annotations

import io
import os
import random
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from robust_helpers import built, cli as run_cli, expect_error, expect_process_error, run_nmc
from unsupported_models import SigmoidTanh, expected_locations

HOWTO = "torch.export.save(torch.export.export(model, (example,)), 'model.pt')"


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _export(module: nn.Module, path: Path, example=None, **kw) -> Path:
    example = torch.randn(1, 4, 8) if example is None else example
    torch.export.save(torch.export.export(module.eval(), (example,), **kw), path)
    return path


def _compile_error(capsys, tmp_path: Path, model: Path | str, *fragments: str) -> str:
    out = tmp_path / "prog.bin"
    line = expect_error(capsys, ["compile", model, "-o", out], *fragments)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    return line


def test_missing_file(capsys, tmp_path):
    missing = tmp_path / "nope.pt"
    line = _compile_error(capsys, tmp_path, missing, f"model file not found: {missing}")
    assert line == f"nmc: error: model file not found: {missing}"


@pytest.mark.parametrize("content, what", [
    (b"", "not a torch.export archive (not a zip file)"),
    (b"hello, world\n", "not a torch.export archive (not a zip file)"),
    (b"R" + random.Random(0).randbytes(4095), "not a torch.export archive (not a zip file)"),
], ids=["empty", "text", "random"])
def test_not_a_torch_export_file(capsys, tmp_path, content, what):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    _compile_error(capsys, tmp_path, path, what, HOWTO)


def test_zip_that_is_not_an_export_archive(capsys, tmp_path):
    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/readme.txt", "hello")
    _compile_error(capsys, tmp_path, path, "zip file but not a torch.export archive", HOWTO)


def test_directory(capsys, tmp_path):
    (tmp_path / "model.pt").mkdir()
    _compile_error(capsys, tmp_path, tmp_path / "model.pt", "is a directory", HOWTO)


def test_truncated_export_archive(capsys, tmp_path, tmp_path_factory):
    data = (built(tmp_path_factory) / "model.pt").read_bytes()
    path = tmp_path / "model.pt"
    path.write_bytes(data[: len(data) // 2])
    _compile_error(capsys, tmp_path, path, str(path), "torch.export")


def test_damaged_export_archive(capsys, tmp_path, tmp_path_factory):
    """A well-formed zip with the export layout whose program JSON is garbage."""
    src = built(tmp_path_factory) / "model.pt"
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith(".json") and "/models/" in item.filename:
                data = b'{"not": "a program"'
            zout.writestr(item, data)
    _compile_error(capsys, tmp_path, path, "cannot load the torch.export archive",
                   "re-export it", HOWTO)


def test_flipped_weight_bit_is_detected(capsys, tmp_path, tmp_path_factory):
    """torch's archive reader skips the zip CRCs: a flipped bit inside a weight would load
    as another weight. nmc checks every member's CRC."""
    src = built(tmp_path_factory) / "model.pt"
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        weights = max((i for i in z.infolist() if "/data/" in i.filename),
                      key=lambda i: i.file_size)
        at = bytes(data).find(z.read(weights)) + weights.file_size // 2
    data[at] ^= 0x10
    path = tmp_path / "model.pt"
    path.write_bytes(bytes(data))
    _compile_error(capsys, tmp_path, path, f"{path} is damaged", "fails its CRC check")


def test_random_bit_flips_never_compile_to_other_weights(capsys, tmp_path, tmp_path_factory):
    """Each flip is refused, or (in bytes no check covers, such as a header's timestamp)
    changes nothing: the program is byte-identical to the undamaged model's."""
    original = (built(tmp_path_factory) / "model.pt").read_bytes()
    path, good = tmp_path / "model.pt", tmp_path / "good.bin"  # prog.bin records the path
    path.write_bytes(original)
    assert run_cli(capsys, "compile", path, "-o", good)[0] == 0
    rng = random.Random(1)
    for i in range(10):
        data = bytearray(original)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        out = tmp_path / f"flip{i}.bin"
        status, _, err = run_cli(capsys, "compile", path, "-o", out)
        if status == 0:
            assert out.read_bytes() == good.read_bytes(), f"flip {i} changed the program"
        else:
            assert status == 1 and err.startswith("nmc: error: "), err


def test_pickled_module(capsys, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(Block(), path)
    _compile_error(capsys, tmp_path, path,
                   "this is a pickled nn.Module (torch.save); nmc needs a torch.export file",
                   HOWTO)


def test_pickled_module_is_not_unpickled(capsys, tmp_path):
    """Recognising a torch.save file must not run its pickle (it can execute code)."""
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    buf = io.BytesIO()
    torch.save({"model": Evil()}, buf)
    path = tmp_path / "model.pt"
    path.write_bytes(buf.getvalue())
    _compile_error(capsys, tmp_path, path, "torch.save", HOWTO)
    assert not marker.exists()


def test_state_dict(capsys, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(Block().state_dict(), path)
    _compile_error(capsys, tmp_path, path, "state_dict", "load the weights into the model",
                   HOWTO)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_says_what_to_do_instead(capsys, tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(Block()).save(str(path))
    _compile_error(capsys, tmp_path, path,
                   "this is a TorchScript file (torch.jit.save)",
                   "export the original nn.Module with " + HOWTO,
                   "TS2EPConverter")


def test_unsupported_ops_are_listed_with_their_location(capsys, tmp_path):
    path = _export(SigmoidTanh(), tmp_path / "model.pt")
    line = _compile_error(capsys, tmp_path, path, "unsupported operation(s): ",
                          *expected_locations())
    assert line.index("sigmoid") < line.index("tanh")  # in program order


def test_dynamic_shapes(capsys, tmp_path):
    path = _export(Block(), tmp_path / "model.pt", torch.randn(4, 3, 8),
                   dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    _compile_error(capsys, tmp_path, path,
                   "nmc needs static shapes; export with concrete example inputs and no "
                   "dynamic_shapes", "symbolic dimensions in: x [")


def test_compile_does_not_touch_an_existing_output_on_error(capsys, tmp_path):
    out = tmp_path / "prog.bin"
    out.write_bytes(b"old program")
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"junk")
    expect_error(capsys, ["compile", bad, "-o", out], "not a torch.export archive")
    assert out.read_bytes() == b"old program"


def test_image_size_not_divisible_by_the_patch_size(capsys, tmp_path):
    from nmc.models.registry import MODELS

    if "deit_tiny" not in MODELS:
        pytest.xfail("DeiT models (issue 3) are not registered yet")
    out = tmp_path / "deit.pt"
    expect_error(capsys, ["export", "deit_tiny", "--img-size", "225", "-o", out],
                 "deit_tiny", "225", "not divisible by patch 16")
    assert not out.exists()


def test_console_script_reports_a_pickled_module_without_traceback(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(Block(), path)
    proc = run_nmc("compile", path, "-o", tmp_path / "prog.bin")
    expect_process_error(proc, "this is a pickled nn.Module", HOWTO)
    assert not (tmp_path / "prog.bin").exists()


def test_console_script_debug_shows_the_traceback(tmp_path):
    proc = run_nmc("--debug", "compile", tmp_path / "nope.pt", "-o", tmp_path / "prog.bin")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "FrontendError: model file not found" in proc.stderr


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_device_file_is_refused_without_reading_it(capsys, tmp_path):
    """/dev/zero never ends: it must be refused, not read until memory runs out."""
    _compile_error(capsys, tmp_path, "/dev/zero", "/dev/zero is not a regular file", HOWTO)
