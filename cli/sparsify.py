"""`nmc sparsify`: the command line of sparsification on real data (the training itself is
nmc.training; `nmc eval`, which measures the result on the emulator, is in nmc.cli.run).

    nmc sparsify deit_digits --budget speedup=2.5 -o deit_sparse.pt
        -> deit_sparse.pt                the fine-tuned model (torch.export; masks baked in)
           deit_sparse.sparsity.json     per-layer N:M, for `nmc compile --sparsity FILE`
           deit_sparse.ckpt              the checkpoint a rerun resumes from
    nmc sparsify swin_digits --budget latency=0.6 -o swin_sparse.pt
        -> swin_sparse.pt, swin_sparse.window-keep.json (`nmc compile --window-keep FILE`)

The budget picks the method: speedup=S (timing-model cycles of the linear layers, S times
fewer than dense) or flops=F (ELSA's MACs) run ELSA; latency=L (modelled latency at most
L x dense) runs SparseViT. `--sparsity N:M|FILE.json` instead of a budget fine-tunes that
configuration alone (no supernet, no search).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from nmc.cli.paths import check_files
from nmc.cli.shared import (
    add_architecture_options, add_cluster_options, add_data_options, add_quiet, add_target,
    cluster_for, positive_int,
)
from nmc.training.errors import SparsifyError

BUDGET_KINDS = ("speedup", "flops", "latency")

DEFAULT_PRETRAIN = 30
"""Dense epochs before sparsifying a built-in architecture (random weights): the small
models of `nmc export --list` reach their plateau on digits in about that many."""


@dataclass(frozen=True)
class Budget:
    kind: str
    value: float

    @property
    def method(self) -> str:
        return "sparsevit" if self.kind == "latency" else "elsa"


def parse_budget(text: str) -> Budget:
    key, sep, value = text.partition("=")
    key = key.strip().lower()
    if not sep or key not in BUDGET_KINDS:
        raise SparsifyError(f"--budget '{text}': expected speedup=S or flops=F (ELSA, N:M) "
                            f"or latency=L (SparseViT, window keep ratios)")
    try:
        v = float(value)
    except ValueError:
        raise SparsifyError(f"--budget '{text}': '{value}' is not a number") from None
    if key == "latency" and not (math.isfinite(v) and 0 < v <= 1):
        raise SparsifyError(f"--budget '{text}': latency is a fraction of the dense "
                            f"model's, in (0, 1]")
    if key != "latency" and not (math.isfinite(v) and v >= 1):
        raise SparsifyError(f"--budget '{text}': {key} must be a number >= 1 (a factor "
                            f"over dense)")
    return Budget(key, v)


def parse_subsets(texts: list[str]) -> dict[str, int]:
    """--subset SPLIT=N ... -> {split: N}."""
    from nmc.models.datasets import SPLITS

    sizes: dict[str, int] = {}
    for text in texts:
        split, sep, value = text.partition("=")
        split = split.strip()
        if not sep or split not in SPLITS:
            raise SparsifyError(f"--subset '{text}': expected SPLIT=N with SPLIT one of "
                                f"{', '.join(SPLITS)}")
        if split in sizes:
            raise SparsifyError(f"--subset {split} given twice")
        try:
            sizes[split] = int(value)
        except ValueError:
            raise SparsifyError(f"--subset '{text}': '{value}' is not a whole number") \
                from None
        if sizes[split] < 1:
            raise SparsifyError(f"--subset '{text}': N must be at least 1")
    return sizes


def config_path(output: Path, budget: Budget | None) -> Path:
    """Where the configuration goes beside OUT (budget None: a given --sparsity)."""
    sparsevit = budget is not None and budget.method == "sparsevit"
    suffix = ".window-keep.json" if sparsevit else ".sparsity.json"
    return output.with_name(output.stem + suffix)


def _model_key(model: str) -> str:
    path = Path(model)
    if path.is_file():
        st = path.stat()
        return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return model


def register(sub) -> None:
    p = sub.add_parser("sparsify", help="train a model N:M sparse (ELSA) or window-pruned "
                                        "(SparseViT) on a data set, under a budget")
    p.add_argument("model", help="built-in architecture (deit_digits, swin_digits, ...: see "
                                 "`nmc export --list`) or a torch.export file")
    add_data_options(p)
    p.add_argument("--budget", metavar="KIND=VALUE",
                   help="speedup=S or flops=F: ELSA N:M (linear layers S times faster on the "
                        "timing model, or F times fewer MACs); latency=L: SparseViT window "
                        "keep ratios (modelled latency at most L x dense)")
    p.add_argument("--sparsity", metavar="N:M|FILE.json",
                   help="instead of --budget: fine-tune this N:M configuration, no supernet "
                        "and no search (a pattern for every block linear, or a file as "
                        "`nmc compile --sparsity-out` writes, e.g. of elsa:speedup=S)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.pt",
                   help="the fine-tuned torch.export file; the configuration is written "
                        "beside it (OUT.sparsity.json or OUT.window-keep.json)")
    p.add_argument("--epochs", type=int, default=20,
                   help="supernet / adaptation epochs (default: %(default)s; none with "
                        "--sparsity)")
    p.add_argument("--pretrain-epochs", type=int, metavar="N",
                   help="dense epochs first (default: 30 for an architecture, which starts "
                        "from random weights; 0 for a model file)")
    p.add_argument("--finetune-epochs", type=int, default=20,
                   help="epochs of the chosen configuration (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, metavar="LR",
                   help="peak learning rate of the supernet / adaptation (cosine schedule); "
                        "the chosen configuration fine-tunes at half of it, a --sparsity one "
                        "at the whole (default: 5e-4, "
                        "for models nmc trains from scratch; a pretrained model wants about "
                        "1e-5 to 5e-5)")
    p.add_argument("--distill", action="store_true",
                   help="the sparse stages learn the dense model's logits (KL at temperature "
                        "2) beside the labels (x 0.5), instead of the labels alone: for a "
                        "pretrained model, whose predictions teach more than its labels")
    p.add_argument("--subset", action="append", default=[], metavar="SPLIT=N",
                   help="use N images of SPLIT (train, val or test; every class in its "
                        "proportion) instead of all: a shorter run at a stated scale; "
                        "repeat for several splits")
    add_architecture_options(p, seed_help="seed of weights, data order and searches "
                                          "(default: %(default)s)")
    p.add_argument("--config-out", type=Path, metavar="FILE.json",
                   help="where to write the chosen configuration")
    p.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="checkpoint to resume from and save to (default: OUT.ckpt); "
                        "another --budget on the same checkpoint reuses its pre-training "
                        "and supernet")
    p.add_argument("--restart", action="store_true",
                   help="ignore an existing checkpoint and start over")
    p.add_argument("--report-json", type=Path, metavar="FILE",
                   help="write the configuration and accuracies as JSON")
    add_target(p)
    p.add_argument("--nproc", type=positive_int, default=1, metavar="N",
                   help="train data-parallel on N processes (torchrun, gloo; default: 1). "
                        "Deterministic for a given N, not bit-identical across N")
    p.add_argument("--nnodes", default="1", metavar="N|MIN:MAX",
                   help="with --nproc: nodes of an elastic run (default: 1, this machine); "
                        "more need --rdzv-endpoint")
    p.add_argument("--max-restarts", type=int, default=0, metavar="K",
                   help="with --nproc: restart the processes up to K times after a failure; "
                        "they resume from the checkpoint (default: %(default)s)")
    p.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                   help="with --nproc: where the nodes of a multi-node run meet (torchrun's "
                        "c10d rendezvous; the same on every node)")
    add_cluster_options(p, "the search's scoring of candidate configurations")
    add_quiet(p)
    p.set_defaults(handler=cmd_sparsify)


def cmd_sparsify(args) -> int:
    """`nmc sparsify`: here, as N ranks under torchrun (--nproc N), or as one of them."""
    from nmc.training import data_parallel

    if data_parallel.under_torchrun():
        return _as_rank(args)
    if args.max_restarts < 0:
        raise SparsifyError(f"--max-restarts must be >= 0, got {args.max_restarts}")
    if args.nproc == 1 and (args.nnodes != "1" or args.rdzv_endpoint or args.max_restarts):
        raise SparsifyError("--nnodes, --max-restarts and --rdzv-endpoint go with --nproc N")
    if args.nproc == 1:
        from nmc.common.cluster import offered

        with offered(**(cluster_for(args) or {})):  # started by the search, if it runs
            return _sparsify(args)
    from nmc.training.torchrun import launch

    _sparsify(args, check_only=True)  # bad options: one line here, before any process starts
    return launch(args.command_line, args.nproc, args.nnodes, args.max_restarts,
                  args.rdzv_endpoint)


def _as_rank(args):
    """One rank of a data-parallel run: the whole command, in step with the others
    (nmc.training.data_parallel); it never returns. Its error goes to the launcher, which
    reports the first rank's; a rank stopped because another failed reports nothing."""
    from nmc.cli.shared import one_line_error
    from nmc.common.errors import NmcError
    from nmc.common.progress import quiet
    from nmc.training import data_parallel

    data_parallel.join()
    try:
        with quiet(not data_parallel.is_main()):
            status = _sparsify(args)
        data_parallel.barrier()  # rank 0 has written the outputs
    except data_parallel.PeerFailed:
        data_parallel.leave(1)
    except NmcError as e:
        data_parallel.leave(1, one_line_error(e))
    except KeyboardInterrupt:
        data_parallel.leave(130)
    except Exception as e:  # a bug in nmc
        data_parallel.leave(70, f"internal error in training process {data_parallel.rank()}: "
                                f"{type(e).__name__}: {one_line_error(e)}")
    except BaseException:  # stopped (SIGTERM: the launcher stops the others after a failure)
        data_parallel.leave(143)
    data_parallel.leave(status)


def _sparsify(args, check_only: bool = False) -> int:
    from nmc.common.fileio import atomic_write_text
    from nmc.compiler.sparsity.spec import config_to_json
    from nmc.isa.target import load_target, target_file
    from nmc.models.datasets import load_dataset
    from nmc.models.registry import MODELS, parse_overrides
    from nmc.training.data_parallel import is_main
    from nmc.training.elsa_flow import elsa, given
    from nmc.training.elsa_flow import format_outcome as format_elsa
    from nmc.training.run import FINETUNE_LR, Epochs, Run
    from nmc.training.sparsevit_flow import format_outcome as format_windows
    from nmc.training.sparsevit_flow import sparsevit_flow
    from nmc.training.subject import arch_image_size, from_arch, from_file

    if (args.budget is None) == (args.sparsity is None):
        raise SparsifyError("give --budget KIND=VALUE (train a supernet and search) or "
                            "--sparsity N:M|FILE.json (fine-tune that configuration)"
                            + (", not both" if args.budget else ""))
    budget = parse_budget(args.budget) if args.budget is not None else None
    spec = given_spec(args.sparsity) if args.sparsity is not None else None
    for name in ("epochs", "finetune_epochs", "pretrain_epochs"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise SparsifyError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.batch_size < 1:
        raise SparsifyError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise SparsifyError(f"--lr must be a positive number, got {args.lr}")
    subsets = parse_subsets(args.subset)
    target = load_target(args.target)
    output = args.output
    config_out = args.config_out or config_path(output, budget)
    checkpoint = args.checkpoint or output.with_suffix(".ckpt")
    # the checkpoint is read and written: an output, which may exist
    check_files(outputs=[("-o", output), ("the configuration", config_out),
                         ("--report-json", args.report_json), ("the checkpoint", checkpoint)],
                inputs=[("the model", args.model if args.model not in MODELS
                                      and Path(args.model).is_file() else None),
                        ("--data", args.data if Path(args.data).is_file() else None),
                        ("--sparsity", spec.path if spec is not None and spec.kind == "file"
                         else None),
                        ("--target", target_file(args.target))])
    overrides = parse_overrides(args.set)
    _check_cluster_options(args)
    if check_only:
        return 0

    is_arch = args.model in MODELS
    if is_arch:
        data = load_dataset(args.data, arch_image_size(args.model, overrides), args.normalize)
        subject = from_arch(args.model, overrides, data.num_classes, args.seed)
    else:
        if overrides:
            raise SparsifyError("--set applies to a built-in architecture, not a model file")
        subject = from_file(Path(args.model))
        data = load_dataset(args.data, subject.img_size, args.normalize)
    data = data.subsets(subsets)
    _check_fits(subject, data)
    pretrain = args.pretrain_epochs if args.pretrain_epochs is not None else \
        (DEFAULT_PRETRAIN if is_arch else 0)
    epochs = Epochs(pretrain, args.epochs, args.finetune_epochs, args.batch_size,
                    lr=args.lr or FINETUNE_LR, distill=args.distill)
    nm_view, config = None, None
    if spec is not None:  # the layers a --sparsity names, checked on the nm IR
        from nmc.compiler.transforms.assign_sparsity import given_config

        nm_view = subject.nm_view()
        config = given_config(nm_view, spec, target)
    options = {"model": _model_key(args.model), "set": overrides, "data": args.data,
               "normalize": args.normalize,
               "method": "given" if budget is None else budget.method,
               # a given configuration trains no supernet: --epochs does not shape its run
               "epochs": [epochs.pretrain] if budget is None else
                         [epochs.pretrain, epochs.supernet],
               "batch": epochs.batch_size, "target": target.name}
    if subsets:  # (only when given: checkpoints made before these options still resume)
        options["subset"] = subsets
    if epochs.lr != FINETUNE_LR:
        options["lr"] = epochs.lr
    if epochs.distill:
        options["distill"] = True
    budget_options = {"budget": [budget.kind, budget.value] if budget is not None
                      else config_to_json(config), "finetune": epochs.finetune}
    log = (lambda text: print(text, file=sys.stderr))
    run = Run(subject.module, checkpoint, options, args.seed, budget_options=budget_options,
              restart=args.restart, log=log)
    log(f"sparsify {subject.name} on {data.name} ({len(data['train'])} train / "
        f"{len(data['val'])} val / {len(data['test'])} test images, "
        f"{data.img_size}x{data.img_size}), {options['method']}, seed {args.seed}; "
        f"checkpoint {checkpoint}")
    if budget is None:
        outcome = given(run, subject, data, config, nm_view, target, epochs)
        table = format_elsa(outcome, "speedup")
        config_text = config_to_json(outcome.config)
        flag = "--sparsity"
        summary = {"method": "given", "config": json.loads(config_text),
                   "speedup": outcome.factor}
    elif budget.method == "elsa":
        outcome = elsa(run, subject, data, budget.kind, budget.value, target, epochs, log)
        table = format_elsa(outcome, budget.kind)
        config_text = config_to_json(outcome.config)
        flag = "--sparsity"
        summary = {"method": "elsa", "config": json.loads(config_text),
                   budget.kind: outcome.factor}
    else:
        outcome = sparsevit_flow(run, subject, data, budget.value, target, epochs, log)
        table = format_windows(outcome)
        config_text = json.dumps(outcome.config, indent=2) + "\n"
        flag = "--window-keep"
        summary = {"method": "sparsevit", "config": outcome.config,
                   "latency": outcome.fraction}
    if not is_main():  # under --nproc N, rank 0 writes and prints for all
        return 0
    subject.export(output)
    atomic_write_text(config_out, config_text)
    if args.report_json is not None:
        atomic_write_text(args.report_json, json.dumps(
            {**summary, "seed": args.seed, "dense_accuracy": outcome.dense_accuracy,
             "accuracy": outcome.accuracy}, indent=2) + "\n")
    print(table)
    print(f"wrote {output} and {config_out}; compile with: nmc compile {output} "
          f"{flag} {config_out} -o prog.bin")
    return 0


def given_spec(text: str):  # noqa: ANN201 - a SparsitySpec
    """--sparsity of nmc sparsify: N:M or FILE.json (an ELSA spec is chosen by --budget)."""
    from nmc.compiler.sparsity.spec import parse_spec

    spec = parse_spec(text)
    if spec.kind == "elsa":
        raise SparsifyError(f"--sparsity {text}: nmc sparsify takes a configuration to "
                            f"fine-tune (N:M or FILE.json); to fine-tune the compiler's ELSA "
                            f"choice, write it first: nmc compile MODEL --sparsity {text} "
                            f"--sparsity-out FILE.json -o prog.bin; to train ELSA's supernet "
                            f"and search, give --budget {spec.budget}=S")
    return spec


def _check_fits(subject, data) -> None:
    import torch

    if subject.in_chans != 3:
        raise SparsifyError(f"{subject.name} takes {subject.in_chans}-channel images; data "
                            f"sets are loaded as 3-channel (grey repeated)")
    with torch.no_grad():
        classes = subject.module(data["val"].images[:1]).shape[-1]
    if classes != data.num_classes:
        raise SparsifyError(f"{subject.name} has {classes} outputs but {data.name} has "
                            f"{data.num_classes} classes")


def _check_cluster_options(args) -> None:
    """--workers / --scheduler (`cluster_for`) spread the search's scoring over a Dask
    cluster; refused beside --nproc N (or under torchrun): the training processes already
    share the scoring (each scores a part of the val split), and each of them would start
    or join a cluster of its own."""
    from nmc.training.data_parallel import under_torchrun

    if cluster_for(args) is not None and (args.nproc > 1 or under_torchrun()):
        raise SparsifyError("give --nproc N or --workers/--scheduler, not both: under --nproc "
                            "the training processes already share the search's scoring")
