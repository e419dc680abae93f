"""Loading a model file: format detection, torch.export.load, the weights store.

nmc reads the archive written by `torch.export.save`, whatever its name (`.pt`, `.pt2`): the
format is recognised from the content.
Everything else a user is likely to hand over (a pickled nn.Module, a state_dict, a TorchScript
file, a random file) is recognised without unpickling it and reported as a `FrontendError`
that says how to produce the right file.

Loaded programs (already `run_decompositions({})`-ed) and their weights are cached per process,
keyed by (absolute path, mtime, size), so one `nmc compile` reads the model file once.
"""

from __future__ import annotations

import io
import logging
import os
import pickletools
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from nmc.compiler.errors import FrontendError
from nmc.compiler.frontend.batchnorm import fold_batchnorm
from nmc.compiler.frontend.fold import fold_constants
from nmc.compiler.frontend.fx_compat import rewrite_for_torch_mlir
from nmc.compiler.frontend.materialize import materialize_operands
from nmc.compiler.frontend.pt2e import ensure_ops_registered, pt2e_scales, read_pt2e

EXPORT_HOWTO = (
    "torch.export.save(torch.export.export(model, (example,)), 'model.pt')"
)

# ------------------------------------------------------------------------- detection


def _pickle_globals(data: bytes, limit: int = 200, max_pickles: int = 6) -> list[str]:
    """The `module.name` globals a pickle refers to, found without unpickling it.

    Scans up to `max_pickles` concatenated pickles (legacy torch.save writes a few small
    header pickles before the object itself).
    """
    found: list[str] = []
    strings: list[str] = []
    stream = io.BytesIO(data)
    try:
        for _ in range(max_pickles):
            if stream.tell() >= len(data) or data[stream.tell() : stream.tell() + 1] != b"\x80":
                break
            for opcode, arg, _pos in pickletools.genops(stream):
                if opcode.name in ("GLOBAL", "INST") and isinstance(arg, str):
                    found.append(arg.replace(" ", "."))
                elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                    strings.append(arg)
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                if len(found) >= limit:
                    return found
    except Exception:  # a truncated or odd pickle: whatever was found is enough
        pass
    return found


def _describe_pickle(data: bytes) -> str:
    """Say what a torch.save pickle holds: an nn.Module, a state_dict or something else."""
    globals_ = _pickle_globals(data)
    # Classes other than the bookkeeping torch.save itself refers to.
    bookkeeping = ("collections.", "torch._utils.", "torch.", "builtins.", "_codecs.")
    module_like = [g for g in globals_ if not g.startswith(bookkeeping)]
    nn_module = any(g.startswith("torch.nn.modules.") for g in globals_)
    if nn_module or module_like:
        return (
            "this is a pickled nn.Module (torch.save); nmc needs a torch.export file: "
            + EXPORT_HOWTO
        )
    if any(g.startswith("torch._utils._rebuild") for g in globals_):
        return (
            "this is a torch.save file holding tensors (a state_dict?), not a model; "
            "nmc needs a torch.export file: load the weights into the model, then "
            + EXPORT_HOWTO
        )
    return "this is a pickle (torch.save), not a torch.export file; nmc needs: " + EXPORT_HOWTO


def _check_format(path: Path, shown: str) -> None:
    """Raise a FrontendError unless `path` looks like a torch.export archive."""
    if not path.exists():
        raise FrontendError(f"model file not found: {shown}")
    if path.is_dir():
        raise FrontendError(
            f"{shown} is a directory; nmc needs a torch.export file: {EXPORT_HOWTO}"
        )
    if not path.is_file():  # a device or a pipe: a torch.export archive is a seekable file
        raise FrontendError(
            f"{shown} is not a regular file; nmc needs a torch.export file: {EXPORT_HOWTO}"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise FrontendError(f"cannot read model file {shown}: {e.strerror or e}") from None
    if not zipfile.is_zipfile(path):
        if head[:1] == b"\x80":  # pickle protocol 2+: a legacy (non-zip) torch.save file
            with open(path, "rb") as f:
                what = _describe_pickle(f.read())
            raise FrontendError(f"{shown}: {what}")
        raise FrontendError(
            f"{shown} is not a torch.export archive (not a zip file); "
            f"nmc needs a torch.export file: {EXPORT_HOWTO}"
        )
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            parts = [n.split("/") for n in names]
            # TorchScript (torch.jit.save): <name>/code/..., <name>/constants.pkl
            if any(len(p) >= 3 and p[1] == "code" for p in parts) or any(
                len(p) == 2 and p[1] == "constants.pkl" for p in parts
            ):
                raise FrontendError(
                    f"{shown}: this is a TorchScript file (torch.jit.save); nmc needs a "
                    f"torch.export file: export the original nn.Module with {EXPORT_HOWTO} "
                    "(a TorchScript module can also be converted, experimentally, with "
                    "torch._export.converter.TS2EPConverter(torch.jit.load(path), "
                    "(example,)).convert())"
                )
            # torch.export.save: a pt2 archive (<name>/archive_format, <name>/models/*.json)
            # or the older export zip (serialized_exported_program.json at the top).
            if any(len(p) == 2 and p[1] == "archive_format" for p in parts) or any(
                len(p) == 3 and p[1] == "models" and p[2].endswith(".json") for p in parts
            ) or "serialized_exported_program.json" in names:
                # torch's own archive reader does not check the members' CRCs: a flipped
                # bit in a weight would load as a different weight. Check them all here.
                damaged = z.testzip()
                if damaged is not None:
                    raise FrontendError(
                        f"{shown} is damaged: member {damaged} fails its CRC check (the "
                        f"file was changed after it was written; export it again)")
                return
            pkls = [n for n, p in zip(names, parts) if len(p) == 2 and p[1] == "data.pkl"]
            if pkls:
                what = _describe_pickle(z.read(pkls[0]))
                raise FrontendError(f"{shown}: {what}")
    except zipfile.BadZipFile as e:
        raise FrontendError(f"{shown} is not a valid torch.export archive: {e}") from None
    raise FrontendError(
        f"{shown} is a zip file but not a torch.export archive (no models/ or "
        f"archive_format entry); nmc needs a torch.export file: {EXPORT_HOWTO}"
    )


# ---------------------------------------------------------------------------- loading


@contextmanager
def _quiet_torch() -> Iterator[None]:
    """Silence torch's warnings about file names and deprecations while loading."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _dynamic_inputs(ep: ExportedProgram) -> list[str]:
    """Names of the graph inputs (else nodes) whose shape has a symbolic dimension."""

    def dynamic(nodes: list[torch.fx.Node]) -> list[str]:
        out = []
        for node in nodes:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor) and any(not isinstance(d, int) for d in val.shape):
                dims = ", ".join(str(d) for d in val.shape)
                out.append(f"{node.name} [{dims}]")
        return out

    nodes = list(ep.graph_module.graph.nodes)
    return dynamic([n for n in nodes if n.op == "placeholder"]) or dynamic(
        [n for n in nodes if n.op == "call_function"]
    )


def _check_signature(ep: ExportedProgram, shown: str) -> None:
    sig = ep.graph_signature
    dynamic = _dynamic_inputs(ep)
    if dynamic:
        raise FrontendError(
            f"{shown}: nmc needs static shapes; export with concrete example inputs and no "
            f"dynamic_shapes (symbolic dimensions in: {', '.join(dynamic[:5])}"
            f"{', ...' if len(dynamic) > 5 else ''})"
        )
    for spec in sig.input_specs:
        if spec.kind in (InputKind.CUSTOM_OBJ, InputKind.TOKEN):
            raise FrontendError(
                f"{shown}: input {spec.arg.name!r} is a {spec.kind.name.lower()}; nmc "
                "supports models whose inputs, parameters and buffers are tensors only"
            )
    placeholders = {n.name: n for n in ep.graph_module.graph.nodes if n.op == "placeholder"}
    for spec in sig.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            node = placeholders.get(spec.arg.name)
            if node is None or not isinstance(node.meta.get("val"), torch.Tensor):
                raise FrontendError(
                    f"{shown}: model input {spec.arg.name!r} is not a tensor; nmc needs "
                    "tensor inputs only (bake other arguments into the model before export)"
                )
    bad = [s for s in sig.output_specs if s.kind != OutputKind.USER_OUTPUT]
    if bad:
        what = ", ".join(f"{s.kind.name.lower()} of {s.target or s.arg}" for s in bad)
        raise FrontendError(
            f"{shown}: the exported program mutates state ({what}); nmc needs a pure "
            "inference model: call model.eval() before torch.export.export"
        )


@dataclass
class _Entry:
    ep: ExportedProgram  # decomposed and folded: what the importer reads
    as_exported: ExportedProgram  # as torch.export.load returned it (shares the tensors)
    weights: dict[str, np.ndarray] | None = None


_CACHE: dict[tuple[str, int, int], _Entry] = {}


def _cache_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path), st.st_mtime_ns, st.st_size)


def _load_entry(model_path: str | os.PathLike[str]) -> _Entry:
    shown = os.fspath(model_path)
    path = Path(model_path).expanduser().absolute()
    _check_format(path, shown)
    key = _cache_key(path)
    entry = _CACHE.get(key)
    if entry is not None:
        return entry
    ensure_ops_registered()  # a PT2E-quantized program's ops (quantized_decomposed)
    try:
        with _quiet_torch(), open(path, "rb") as f:
            ep = torch.export.load(f)
    except FrontendError:
        raise
    except Exception as e:  # torch raises many types for damaged/incompatible archives
        raise FrontendError(
            f"{shown}: cannot load the torch.export archive ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); re-export it with this "
            f"PyTorch version ({torch.__version__}): {EXPORT_HOWTO}"
        ) from None
    _check_signature(ep, shown)
    try:
        with _quiet_torch():
            decomposed = materialize_operands(fold_batchnorm(fold_constants(read_pt2e(
                rewrite_for_torch_mlir(ep.run_decompositions({})), shown))))
    except FrontendError:
        raise
    except Exception as e:
        raise FrontendError(
            f"{shown}: torch.export decomposition failed ({type(e).__name__}: {e})"
        ) from None
    if pt2e_scales(decomposed):  # the program ELSA runs: the same dequantized weights
        read_pt2e(ep, shown)
    # Drop stale entries of the same file (it changed on disk).
    for k in [k for k in _CACHE if k[0] == key[0]]:
        del _CACHE[k]
    entry = _CACHE[key] = _Entry(decomposed, ep)
    return entry


def load_exported_program(path: str | os.PathLike[str]) -> ExportedProgram:
    """Load a `torch.export.save` archive (`.pt` or `.pt2`), decomposed and checked.

    The result has had `run_decompositions({})` applied (needed before the torch-mlir
    import), has static shapes and tensor-only inputs. It is cached per process, keyed by
    (absolute path, mtime, size): treat it as read-only.

    Raises `FrontendError` for a missing file, a file that is not a torch.export archive
    (pickled nn.Module, state_dict, TorchScript, anything else), or a program nmc cannot
    take (dynamic shapes, non-tensor inputs, state mutation).
    """
    return _load_entry(path).ep


def load_as_exported(path: str | os.PathLike[str]) -> ExportedProgram:
    """The program of the same file as `torch.export.load` returns it (no decompositions,
    no folding: `aten.linear` stays whole; a PT2E-quantized model's q/dq pattern read as
    for the compiler: frontend/pt2e.py), from the same cache and read, checked alike.
    Its tensors are shared with `load_exported_program`'s and `load_weights`': do not
    modify them."""
    return _load_entry(path).as_exported


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.to(torch.float32)
    arr = t.contiguous().numpy()
    arr.setflags(write=False)
    return arr


def weights_of(ep: ExportedProgram) -> dict[str, np.ndarray]:
    """Every parameter, buffer and lifted constant of `ep`, by state_dict key (read-only).

    Floating-point tensors are converted to float32; other dtypes keep theirs.
    """
    out: dict[str, np.ndarray] = {}
    for key, t in ep.state_dict.items():
        if isinstance(t, torch.Tensor):
            out[key] = _to_numpy(t)
    for key, t in ep.constants.items():
        if isinstance(t, torch.Tensor) and key not in out:
            out[key] = _to_numpy(t)
    return out


def load_weights(model_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The model's tensors by state_dict key (the names `nm.param` ops carry).

    float32 numpy arrays (non-float buffers keep their dtype), read-only, from the same
    per-process cache as `load_exported_program`, so the file is read once per compile.
    Returns a new dict each call; the arrays are shared.
    """
    entry = _load_entry(model_path)
    if entry.weights is None:
        entry.weights = weights_of(entry.ep)
    return dict(entry.weights)


def clear_cache() -> None:
    """Forget every cached program and weights (tests, long-running processes)."""
    _CACHE.clear()
