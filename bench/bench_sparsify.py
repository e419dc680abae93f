"""Accuracy against modelled speed-up on real data (issue 8): ELSA N:M and SparseViT window
pruning, trained on scikit-learn's digits, over several seeds. Run on demand (not a test):

    .venv/bin/python bench/bench_sparsify.py                    # 3 seeds, both models
    .venv/bin/python bench/bench_sparsify.py --seeds 0 --models deit --no-write
    .venv/bin/python bench/bench_sparsify.py --quick --no-write  # smoke run (few epochs)

Per seed, for deit_digits (the same library functions `nmc sparsify` runs):
- dense: trained from scratch (PRETRAIN epochs), and the same trained on for as many
  epochs as the sparse rows get after it (the control for their extra training);
- uniform 2:4, 1:4, 1:8 by magnitude (`nm_mask`) on the dense model, without fine-tune and
  with the fine-tune every chosen ELSA configuration gets (FINETUNE epochs, same schedule;
  ELSA's starts from its supernet, the uniform ones from the dense model);
- ELSA at speed-ups 2, 2.5, 3: one supernet per seed, then search + fine-tune per budget.
For swin_digits:
- dense; after sparse-aware adaptation, per uniform keep ratio r in UNIFORM_KEEPS: the
  uniform configuration and SparseViT's searched keep ratios under a budget equal to the
  uniform one's modelled latency, both fine-tuned alike.

Every row is exported, compiled (`compile_model`, with its --sparsity / --window-keep
JSON) and run on the emulator over the whole test split (`runtime.evaluate`): the table
gives the emulator's top-1 and checks it against PyTorch's top-1 of the same pruned model
(prediction by prediction). Speed-ups: `linear` is the budget ELSA works with (timing-model
cycles of the linear layers), `program` the emulator's cycles of the whole compiled
program against the dense program's; `est. latency` is the SparseViT latency model's.
The section between the bench_sparsify markers of BENCHMARKS.md is rewritten; the raw
rows go to out/bench_sparsify.json.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from sections import replace_section  # bench/sections.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
PRETRAIN, SUPERNET, FINETUNE = 30, 20, 20  # nmc sparsify's defaults
PATTERNS = ((2, 4), (1, 4), (1, 8))
SPEEDUPS = (2.0, 2.5, 3.0)
UNIFORM_KEEPS = (0.6, 0.4)


def compiled_row(module, config_json: dict, flag: str, data, workdir: Path, name: str,
                 reference) -> dict:
    """Export `module`, compile it with the configuration, evaluate it on the emulator
    over the test split; compare with `reference` (images -> logits in PyTorch)."""
    from nmc.compiler.driver import compile_model
    from nmc.training.run import evaluate
    from nmc.isa.target import load_target
    from nmc.models.registry import export_to_file
    from nmc.runtime.evaluate import run_classifier

    path, cfg = workdir / f"{name}.pt", workdir / f"{name}.json"
    example = torch.zeros(1, 3, data.img_size, data.img_size)
    export_to_file(module, example, path)
    cfg.write_text(json.dumps(config_json))
    options = {}
    if flag == "sparsity" and config_json:
        options["sparsity"] = {"spec": str(cfg)}
    if flag == "window" and config_json:
        options["window"] = {"keep": str(cfg)}
    program = compile_model(path, **options)
    test = data["test"]
    t0 = time.perf_counter()
    result = run_classifier(program, load_target(), test.images.numpy())
    emu_s = time.perf_counter() - t0
    with torch.no_grad():
        ref_pred = torch.cat([reference(test.images[i:i + 512]).argmax(-1)
                              for i in range(0, len(test), 512)]).numpy()
    labels = test.labels.numpy()
    return {"emulator_top1": result.accuracy(labels),
            "pytorch_top1": float((ref_pred == labels).mean()),
            "agree": int((ref_pred == result.predictions).sum()), "n": len(labels),
            "cycles": result.cycles_per_run, "emulator_s": emu_s,
            "val_top1": evaluate(reference, data["val"])[0]}


def deit_rows(seed: int, data, target, epochs, workdir: Path) -> list[dict]:
    from nmc.training.elsa_flow import (
        Supernet, finetune, search_and_finetune, train_supernet,
    )
    from nmc.training.run import FINETUNE_LR, Dense, Run, TrainSettings, pretrain
    from nmc.training.subject import from_arch
    from nmc.compiler.sparsity.spec import config_to_json
    from nmc.compiler.transforms.assign_sparsity import candidates
    from nmc.models.nm_sparsity import apply_nm

    subject = from_arch("deit_digits", {}, data.num_classes, seed)
    module = subject.module
    run = Run(module, None, {}, seed, log=lambda s: None)
    pretrain(run, module, data.splits, epochs.pretrain, epochs.batch_size)
    layers, fixed = candidates(subject.nm_view(), "speedup", target)
    dense_cost = fixed + sum(c.costs[0] for c in layers)
    rows = []

    def add(label, mod, config, linear_cost, extra=None):
        as_json = json.loads(config_to_json(config)) if config else {}
        row = compiled_row(mod, as_json, "sparsity", data, workdir, f"deit{seed}", mod)
        rows.append({"model": "deit_digits", "seed": seed, "row": label,
                     "linear_speedup": dense_cost / linear_cost, **row, **(extra or {})})
        print(json.dumps(rows[-1]), flush=True)

    add("dense", module, {}, dense_cost)
    params = [c.param for c in layers]
    # the control for the extra epochs the sparse rows get: the dense model trained on for
    # as long as ELSA's supernet and fine-tune together, as the fine-tunes are
    extra = epochs.supernet + epochs.finetune
    longer = copy.deepcopy(module)
    Run(longer, None, {}, seed, log=lambda s: None).train(
        "finetune", Dense(longer), data["train"],
        TrainSettings(epochs=extra, lr=FINETUNE_LR / 2, batch_size=epochs.batch_size))
    add(f"dense + {extra} more epochs", longer, {}, dense_cost)
    for p in PATTERNS:
        idx = [c.patterns.index(p) for c in layers]
        cost = fixed + sum(c.costs[i] for c, i in zip(layers, idx))
        config = {c.name: p for c in layers}
        pruned = apply_nm(module, {c.param.removesuffix(".weight"): p for c in layers})
        add(f"uniform {p[0]}:{p[1]}", pruned, config, cost)
        tuned = copy.deepcopy(module)
        finetune(Run(tuned, None, {}, seed, log=lambda s: None), tuned, params,
                 [p] * len(params), data, epochs)
        add(f"uniform {p[0]}:{p[1]} + fine-tune", tuned, config, cost)
    supernet = train_supernet(run, subject, data, "speedup", target, epochs)
    for s in SPEEDUPS:
        branch = copy.deepcopy(module)
        net = Supernet(branch, layers, fixed, supernet.dense_accuracy, supernet.sensitivity)
        outcome = search_and_finetune(Run(branch, None, {}, seed, log=lambda s: None), net,
                                      data, "speedup", s, epochs, log=lambda s: None)
        supernet.sensitivity = net.sensitivity
        add(f"ELSA speedup={s:g}", branch, outcome.config, outcome.cost,
            {"config": config_to_json(outcome.config)})
    return rows


def swin_rows(seed: int, data, target, epochs, workdir: Path) -> list[dict]:
    from nmc.training.run import Run, pretrain
    from nmc.training.sparsevit_flow import Adapted, adapt, finetune, search_and_finetune
    from nmc.training.subject import from_arch

    subject = from_arch("swin_digits", {}, data.num_classes, seed)
    module = subject.module
    run = Run(module, None, {}, seed, log=lambda s: None)
    rows = []

    def add(label, mod, config, latency, extra=None):
        def reference(x, mod=mod, config=config):
            mod.set_window_keep(config or None)
            try:
                return mod(x)
            finally:
                mod.set_window_keep(None)

        row = compiled_row(mod, config, "window", data, workdir, f"swin{seed}", reference)
        rows.append({"model": "swin_digits", "seed": seed, "row": label,
                     "est_latency": latency, **row, **(extra or {})})
        print(json.dumps(rows[-1]), flush=True)

    pretrain(run, module, data.splits, epochs.pretrain, epochs.batch_size)
    add("dense", module, {}, 1.0)
    adapted = adapt(run, subject, data, target, epochs)  # continues the same run
    lat = adapted.latency
    dense = lat.dense()
    add("adapted, keep 1.0", module, {}, 1.0)
    for keep in UNIFORM_KEEPS:
        # the budget is the uniform configuration's own latency: equal modelled latency
        uniform = {b: keep for b in lat.blocks}
        L = lat.cycles(uniform) / dense
        branch = copy.deepcopy(module)
        out = search_and_finetune(Run(branch, None, {}, seed, log=lambda s: None),
                                  Adapted(branch, lat, adapted.stages,
                                          adapted.dense_accuracy), data, L, epochs,
                                  log=lambda s: None)
        add(f"SparseViT searched, latency <= {L:.3f}", branch, out.config, out.fraction,
            {"config": out.config})
        branch = copy.deepcopy(module)
        finetune(Run(branch, None, {}, seed, log=lambda s: None), branch, uniform, data,
                 epochs)
        add(f"uniform keep {keep:g} (latency {L:.3f})", branch, uniform, L)
    return rows


def summarise(rows: list[dict]) -> str:
    def ms(values):
        values = list(values)
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{100 * mean:.2f} ± {100 * sd:.2f}"

    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        labels = list(dict.fromkeys(r["row"] for r in mine))
        dense_cycles = {r["seed"]: r["cycles"] for r in mine if r["row"] == "dense"}
        key = "linear_speedup" if model.startswith("deit") else "est_latency"
        head = "linear speed-up" if key == "linear_speedup" else "est. latency (of dense)"
        out += [f"**{model}**", "",
                f"| configuration | top-1 test % (mean ± sd) | val % | {head} | program "
                f"speed-up (emulator cycles) | emulator = PyTorch |",
                "|---|---:|---:|---:|---:|---|"]
        for label in labels:
            rs = [r for r in mine if r["row"] == label]
            speed = [dense_cycles[r["seed"]] / r["cycles"] for r in rs]
            same = all(r["agree"] == r["n"] and r["emulator_top1"] == r["pytorch_top1"]
                       for r in rs)
            out.append(f"| {label} | {ms(r['emulator_top1'] for r in rs)} | "
                       f"{ms(r['val_top1'] for r in rs)} | "
                       f"{statistics.mean(r[key] for r in rs):.2f} | "
                       f"{statistics.mean(speed):.2f}x | "
                       f"{'yes' if same else 'NO'} ({sum(r['agree'] for r in rs)}/"
                       f"{sum(r['n'] for r in rs)} predictions) |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    from nmc.training.run import Epochs
    from nmc.common.progress import quiet
    from nmc.isa.target import load_target
    from nmc.models.datasets import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["deit", "swin"])
    parser.add_argument("--quick", action="store_true", help="1-2 epochs per stage")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    # import every module now: an edit of the sources during a long run cannot break it
    import nmc.compiler.driver  # noqa: F401
    import nmc.compiler.emit  # noqa: F401
    import nmc.compiler.frontend.importer  # noqa: F401
    import nmc.compiler.pipeline  # noqa: F401
    import nmc.training.elsa_flow  # noqa: F401
    import nmc.training.sparsevit_flow  # noqa: F401
    import nmc.training.subject  # noqa: F401
    import nmc.runtime.evaluate  # noqa: F401
    command = " ".join([".venv/bin/python", "bench/bench_sparsify.py",
                        *(argv if argv is not None else sys.argv[1:])])
    epochs = Epochs(2, 1, 1) if args.quick else Epochs(PRETRAIN, SUPERNET, FINETUNE)
    target = load_target()
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp, quiet():
        for seed in args.seeds:
            if "deit" in args.models:
                rows += deit_rows(seed, load_dataset("digits", 16), target, epochs, Path(tmp))
            if "swin" in args.models:
                rows += swin_rows(seed, load_dataset("digits", 32), target, epochs, Path(tmp))
    minutes = (time.time() - t0) / 60
    (ROOT / "out").mkdir(exist_ok=True)
    (ROOT / "out" / "bench_sparsify.json").write_text(json.dumps(rows, indent=1))
    body = summarise(rows)
    print(body)
    if not args.no_write:
        section = "\n".join([
            "## Sparsity that keeps accuracy: ELSA and SparseViT on digits (issue 8)", "",
            f"Measured {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} with", "",
            f"    {command}", "",
            f"- machine: `{platform.node()}` {platform.machine()}, Python "
            f"{platform.python_version()}, torch {torch.__version__} on "
            f"{torch.get_num_threads()} threads; {minutes:.0f} minutes in all",
            f"- data: scikit-learn digits, fixed stratified split 1079 train / 359 val / "
            f"359 test; deit_digits at 16x16, swin_digits at 32x32; seeds "
            f"{', '.join(map(str, args.seeds))} (weights, data order, sampling, searches)",
            f"- epochs: {epochs.pretrain} dense, {epochs.supernet} supernet / adaptation, "
            f"{epochs.finetune} fine-tune of every final configuration (ELSA's from the "
            f"supernet, uniform N:M and keep ratios from the dense or adapted model); "
            f"target sta_ref", "",
            "top-1 test is measured on the emulator (every test image through the compiled "
            "program); `emulator = PyTorch` checks each prediction against PyTorch's for "
            "the same pruned model.", "",
            body])
        replace_section(args.output, "bench_sparsify", section)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
