"""The model `nmc sparsify` trains: a built-in architecture or a torch.export file.

- ARCH (`deit_digits`, `swin_digits`, any name of `nmc export --list`): built with fixed-
  seed random weights and the data set's number of classes, trained from scratch first.
- model.pt: the ExportedProgram's module (`ep.module()`), trained as it is. Its graph was
  traced at one batch size (nmc export uses 1), so it runs on a batch through `torch.vmap`
  over single images (5x faster than a Python loop over them on deit_digits, though
  vmap loops internally for the exported attention op, which has no batching rule). Window adaptation needs nmc's own Swin (its `set_window_keep`), so
  SparseViT takes an ARCH only.

`nm_view` is what the compiler sees of the model (the nm IR after raise-torch-to-nm and
fuse-activations, as `nmc compile` has it when it costs sparsity): the layer names, the
weight parameters and the shapes that the timing model costs. `PortableModule` is the
module as another process makes it again (a Dask worker scoring search candidates, `nmc
sparsify --workers`): how it was built (the architecture, or the file's bytes) and its
weights now.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from nmc.training.errors import SparsifyError


@dataclass
class Subject:
    name: str
    module: torch.nn.Module  # called on a batch of images, whatever its traced batch
    img_size: int
    in_chans: int
    from_arch: bool
    # how to build the module again (`PortableModule`): ("arch", arch, overrides,
    # num_classes, seed) or ("file", path)
    origin: tuple = field(default=(), repr=False)

    def example(self) -> torch.Tensor:
        return torch.zeros(1, self.in_chans, self.img_size, self.img_size)

    def export(self, path: str | os.PathLike) -> None:
        """torch.export the module at batch 1, atomically (what `nmc compile` reads)."""
        from nmc.models.registry import export_to_file

        batched = self.module.__dict__.pop("forward", None)  # the traced forward again
        try:
            export_to_file(self.module, self.example(), path)
        finally:
            if batched is not None:
                self.module.forward = batched

    def nm_view(self, passes: tuple[str, ...] = ("fuse-activations",)):
        """The nm IR of the module (raise-torch-to-nm, then `passes`)."""
        from nmc.compiler.driver import import_nm
        from nmc.compiler.pipeline import make_context, run_pipeline

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            self.export(path)
            ctx = make_context()
            module = import_nm(path, ctx)
            if passes:
                run_pipeline(module, ",".join(passes), ctx)
        return module


def arch_image_size(arch: str, overrides: dict[str, int]) -> int:
    """The input image size of built-in architecture `arch` with `overrides` (checked)."""
    from nmc.models.registry import MODELS, model_params

    spec = MODELS.get(arch)
    if spec is None:
        raise SparsifyError(f"unknown model '{arch}': give a built-in architecture "
                            f"({', '.join(MODELS)}) or a torch.export file")
    if "num_classes" not in spec.defaults or "img_size" not in spec.defaults:
        raise SparsifyError(f"{arch} is not an image classifier (sparsify trains one)")
    return model_params(arch, overrides)["img_size"]


def from_arch(arch: str, overrides: dict[str, int], num_classes: int, seed: int) -> Subject:
    from nmc.models.registry import build_model

    arch_image_size(arch, overrides)
    module, example = build_model(arch, {**overrides, "num_classes": num_classes}, seed=seed)
    return Subject(arch, module, int(example.shape[-1]), int(example.shape[1]), True,
                   ("arch", arch, overrides, num_classes, seed))


def from_file(path: Path) -> Subject:
    if not path.is_file():
        from nmc.models.registry import MODELS

        raise SparsifyError(f"'{path}' is neither a model file nor a built-in architecture "
                            f"({', '.join(MODELS)})")
    subject = _from_export(lambda: open(path, "rb"), path)
    subject.origin = ("file", str(path))
    return subject


def _from_export(opened: Callable[[], BinaryIO], path: Path) -> Subject:
    """The Subject of the torch.export file `opened()` reads (`path` names it)."""
    from nmc.compiler.frontend.loader import _quiet_torch

    try:
        with _quiet_torch(), opened() as f:
            program = torch.export.load(f)
    except Exception as e:  # torch.export.load raises many types on a bad file
        raise SparsifyError(f"{path}: not a torch.export file ({type(e).__name__}); "
                            f"write one with `nmc export` or torch.export.save") from None
    inputs = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    shapes = [n.meta["val"].shape for n in program.graph.nodes
              if n.op == "placeholder" and n.name in {s.arg.name for s in inputs}]
    if len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][2] != shapes[0][3]:
        raise SparsifyError(f"{path}: sparsify needs an image model with one input "
                            f"[batch, channels, S, S]; this one takes "
                            f"{[list(s) for s in shapes]}")
    batch, chans, size = (int(x) for x in shapes[0][:3])
    if batch != 1:
        raise SparsifyError(f"{path}: traced at batch {batch}; sparsify takes a model "
                            f"exported at batch 1 (as `nmc export` writes them)")
    module = program.module()
    traced = module.forward
    # quiet vmap's C++ warning on every call that only says that it loops over SDPA
    getattr(torch._C._functorch, "_set_vmap_fallback_warning_enabled", lambda _: None)(False)

    def batched(images: torch.Tensor) -> torch.Tensor:
        return torch.vmap(lambda x: traced(x.unsqueeze(0)).squeeze(0))(images)

    # an instance attribute: functional_call (the N:M supernet) calls it with the
    # parameters swapped; Subject.export removes it to export the traced forward
    module.forward = batched
    return Subject(path.stem, module, size, chans, False)


@dataclass
class PortableModule:
    """A module made from a Subject's `origin`, as it is now (`of`): `module()` builds it
    again, in this process or another, with the same weights and mode."""

    origin: tuple  # ("arch", arch, overrides, num_classes, seed) or ("export", bytes, name)
    state: dict[str, Any]
    training: bool

    @classmethod
    def of(cls, origin: tuple, module: torch.nn.Module) -> PortableModule:
        """`module` (the one a Subject of `origin` made, or a copy, perhaps trained)."""
        if not origin:
            raise SparsifyError("this model was not made from an architecture or a file, so "
                                "a Dask worker cannot build it again")
        if origin[0] == "file":  # the bytes travel: the workers need no file of their own
            origin = ("export", Path(origin[1]).read_bytes(), Path(origin[1]).stem)
        return cls(origin, module.state_dict(), module.training)

    def module(self) -> torch.nn.Module:
        from nmc.models.registry import set_training

        if self.origin[0] == "arch":
            subject = from_arch(*self.origin[1:])
        else:
            subject = _from_export(lambda: io.BytesIO(self.origin[1]), Path(self.origin[2]))
        subject.module.load_state_dict(self.state)
        set_training(subject.module, self.training)
        return subject.module
