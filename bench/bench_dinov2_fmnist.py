"""Benchmark: a pretrained DINOv2 ViT-S/14 classifier on Fashion-MNIST under N:M sparsity,
its accuracy measured on the emulator (issue 14). Bench-only: needs `make bench-deps`.

    .venv/bin/python bench/dinov2_weights.py -o bench-out/dinov2_vits14.pth
    nice -n 10 .venv/bin/python bench/bench_dinov2_fmnist.py [STAGE ...]

Stages (default: all, in this order; every one caches what it made under --out, default
bench-out/dinov2_fmnist/, which git ignores, so a rerun or a killed run resumes):

- features: the backbone's class-token features (after the final norm) of the first
  N_TRAIN images of the train split and the first N_VAL of val, at IMG x IMG (Fashion-
  MNIST's 28x28 grey images resized bilinearly, repeated over 3 channels, ImageNet mean /
  std: what `nmc eval --data fashion-mnist --normalize imagenet` feeds the program; the
  position embedding resampled from 16x16 to 8x8 patches as timm does), in chunks.
- probe: a linear head (multinomial logistic regression, L-BFGS; L2 strength chosen on the
  val features) on the frozen train features; the backbone's weights with the head are
  written as classifier.pth and exported (`nmc export`) as classifier.pt2, the model file
  every row compiles.
- oneshot: every configuration of CONFIGS compiled one-shot (`nmc compile --sparsity ...`;
  ELSA calibrates on CALIB train images), run on the emulator (`nmc eval --limit
  --workers`) on the first N_EVAL test images, for REFERENCE_ROWS its predictions compared
  one by one with PyTorch's for the same pruned model (`--reference`, the weights masked
  with models/nm_sparsity), its modelled cycles per layer from `nmc run --report-json`. A
  row cached from a run on fewer images (the fine-tuned rows first ran on 500) reruns its
  evaluation alone.
- test: the dense classifier's PyTorch top-1 on all 10,000 test images (features).
- finetune: the sparse rows (--finetune SPEC ...) fine-tuned briefly with distillation
  from the dense classifier (FINETUNE_* below; --steps, one row per --seeds seed, which
  fixes the order of the fine-tune's batches), then compiled and evaluated as above.
  SPEC "flow:speedup=2.5" is the configuration the supernet stage's flow chose (its one-
  shot row first: `oneshot --configs flow:speedup=2.5`): that configuration given the
  rows' training, to tell its choice from its training.
- recipe: the configurations of --finetune (default: dense) fine-tuned with each --recipe
  (default: RECIPES; --seeds, --steps), their PyTorch top-1 on the first N_EVAL test images
  (recipes.json): what in the fine-tune costs the dense model accuracy, and whether a
  gentler recipe changes how the configurations compare.
- supernet: ELSA's whole flow, `nmc sparsify --budget speedup=2.5` from the classifier
  (supernet, search, fine-tune of the chosen configuration; SPARSIFY, a reduced scale), one
  row per --seeds seed, its model compiled and evaluated as the other rows; with --distill,
  `nmc sparsify --distill` (the fine-tuned rows' loss instead of cross-entropy), rows of
  their own.
- given: `nmc sparsify --sparsity FILE.json --distill` (no supernet, no search) on the one-
  shot configuration of each --finetune SPEC (default: elsa:speedup=2.5), GIVEN below:
  the 378-step column's fine-tune run by nmc's own command instead of this script's loop
  (a user's way to it), one row per --seeds seed, compiled and evaluated as the other rows.
- diagnose: why ELSA's choice does or does not win (`Bench.diagnose`): per one-shot
  configuration, ELSA's proxy, the errors of the whole configuration, the weight energy
  its masks remove.
- table: the Markdown table of every finished row, and the fine-tuned pairs of nearly
  equal modelled speed-up compared seed by seed, and the diagnosis (results.md). It first
  archives what the tables are made of (each row's row.json, the stages' summaries) in
  bench/results/dinov2_fmnist/, which git tracks, and reads the rows from there and from
  --out: a new machine (an empty bench-out/) loses the models, not the numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nmc.common.threads import torch_threads
from nmc.models.datasets import load_dataset
from nmc.models.registry import build_model
from nmc.training.distill import CE_WEIGHT, distillation_loss

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "dinov2_fmnist"  # committed: the tables' numbers
SUMMARIES = ("probe.json", "dense_test.json", "diagnosis.json", "recipes.json")
NMC = [sys.executable, "-m", "nmc.cli"]
ARCH = "vit_small_patch14_dinov2"
IMG = 112  # 8x8 patches of 14 + the class token: 65 tokens (224 would be 257)
DATA = ["--data", "fashion-mnist", "--normalize", "imagenet"]
N_TRAIN = 4000  # train-split images the head is trained on (first of the split)
N_VAL = 1000  # val-split images that choose its L2 strength
N_EVAL = 2000  # test images every row runs on the emulator (the first of test)
# processes `nmc eval --workers` shards the images over: on 2 shared cores one worker
# beat two (Dask's start and the program's transfer outweigh a second, busy core), so
# two rows side by side, each on one, is how to use both
WORKERS = 1
CALIB = 8  # train images ELSA's sensitivity calibrates on
HELD_OUT = 64  # val images the diagnosis measures whole configurations' errors on too
CHUNK = 250
THREADS = 2
L2_GRID = (1e-4, 1e-3, 1e-2)
# in the order they are run (the most telling first, in case time runs out)
CONFIGS = ["dense", "2:4", "elsa:speedup=2.5", "1:4", "elsa:speedup=2", "4:8", "2:8", "1:8",
           "elsa:speedup=1.5", "elsa:speedup=3", "elsa:speedup=2,rank=joint",
           "elsa:speedup=2.5,rank=joint", "elsa:speedup=2,rank=energy",
           "elsa:speedup=2.5,rank=energy"]
# one-shot rows whose emulator predictions are compared with PyTorch's on all N_EVAL images
# (the fine-tuned rows always are); the others skip that second pass (it costs as much as
# the emulator's) to fit the time on 2 shared cores
REFERENCE_ROWS = ("dense", "2:4", "elsa:speedup=2.5")
TABLE_ORDER = ["dense", "2:4", "4:8", "1:4", "2:8", "1:8", "elsa:speedup=1.5",
               "elsa:speedup=2", "elsa:speedup=2.5", "elsa:speedup=3",
               "elsa:speedup=2,rank=joint", "elsa:speedup=2.5,rank=joint",
               "elsa:speedup=2,rank=energy", "elsa:speedup=2.5,rank=energy",
               "flow:speedup=2.5"]
# "flow:BUDGET": the configuration ELSA's whole flow chose (`nmc sparsify --budget BUDGET`,
# stage supernet, its seed FLOW_SEED), applied one-shot to the classifier and fine-tuned as
# the other rows: what that configuration is worth given the rows' training instead of
# the flow's own (not in CONFIGS: it needs the supernet stage's row first)
FLOW_SEED = 0
# the fine-tune: whole model (head included), masks recomputed every step (straight-
# through, nmc's FixedNM), AdamW, cosine learning rate, on the first N_TRAIN train images;
# loss: nmc's distillation loss (training/distill.py: KL to the dense classifier's logits,
# cached from the features, at temperature 2, + 0.5 x cross-entropy with the labels)
FINETUNE_STEPS = 30
FINETUNE_BATCH = 32
FINETUNE_LR = 3e-5
SAVE_EVERY = 10


RATE_TAG = r"_lr\dem\d+"  # what rate_tag() writes, as a pattern in the row-name patterns


def rate_tag(lr: float, default: float) -> str:
    """A learning rate as a part of a row's name: none for `default`, 1e-05 -> _lr1em5
    (no '-', which separates the parts of a row's name)."""
    if lr == default:
        return ""
    return "_lr" + f"{lr:.0e}".replace("e-0", "em").replace("e-", "em")


def rate_of(tag: str | None, default: float) -> float:
    """The learning rate a rate_tag() stands for (`default` for none)."""
    if not tag:
        return default
    mantissa, _, exponent = tag.removeprefix("_lr").partition("em")
    return float(f"{mantissa}e-{exponent}")


@dataclass(frozen=True)
class Column:
    """A fine-tune's length and learning rate (the rest is FINETUNE_*): a column of the
    table, a part of its rows' names (none for the default, the first run's names)."""

    steps: int = FINETUNE_STEPS
    lr: float = FINETUNE_LR

    def tag(self) -> str:
        length = "" if self.steps == FINETUNE_STEPS else str(self.steps)
        return length + rate_tag(self.lr, FINETUNE_LR)

    @staticmethod
    def of(name: str) -> Column:
        m = re.match(rf"finetune(\d*)({RATE_TAG})?-", name)
        return Column(int(m[1]) if m[1] else FINETUNE_STEPS, rate_of(m[2], FINETUNE_LR))

    def label(self) -> str:
        return f"{self.steps} steps" + (f", lr {self.lr:g}" if self.lr != FINETUNE_LR else "")


@dataclass(frozen=True)
class Recipe:
    """What the fine-tune can vary: the peak learning rate, the weight of the cross-entropy
    beside the distillation, AdamW's weight decay (FINETUNE_* by default)."""

    lr: float = FINETUNE_LR
    ce: float = CE_WEIGHT
    weight_decay: float = 0.05


# the recipe stage's default recipes (`--recipe lr=1e-5,ce=0`): does the recipe cost the
# dense model accuracy, and is it the learning rate or the cross-entropy with the labels?
RECIPES = [Recipe(), Recipe(lr=1e-5), Recipe(lr=3e-6), Recipe(ce=0.0)]


def parse_recipe(text: str) -> Recipe:
    """'lr=1e-5,ce=0' -> Recipe(lr=1e-5, ce=0.0) (field=value, comma-separated)."""
    fields = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        fields[key.strip().replace("-", "_")] = float(value)
    return Recipe(**fields)
# ELSA's whole flow, `nmc sparsify` on the classifier (stage "supernet"), at a stated reduced
# scale to fit ~1 h on 2 cores: the supernet and the chosen configuration's fine-tune on a
# stratified subset of SPARSIFY_TRAIN train images (cross-entropy with labels, nmc
# sparsify's default loss; `supernet --distill`: its --distill, the rows' loss), the
# search scored on SPARSIFY_VAL val images (each of its ~410 configurations, 48 layers x
# 5 patterns alone and then the evolutionary search's, costs a pass over them), the
# fine-tune at half the supernet's learning rate
SPARSIFY = {"epochs": 4, "finetune-epochs": 2, "batch-size": 32, "lr": 3e-5}
SPARSIFY_TRAIN = 2000
SPARSIFY_VAL = 200
# stage "given", `nmc sparsify --sparsity FILE.json --distill`: as many steps as the 378-step
# column (3 epochs of a stratified N_TRAIN train images in batches of 32: 375 steps), at its
# learning rate (a given configuration fine-tunes at the whole --lr), val SPARSIFY_VAL images
GIVEN = {"finetune-epochs": 3, "batch-size": 32, "lr": 1e-5}


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def nmc(*args: str, log_file: Path | None = None) -> str:
    """Run `nmc ARGS` (the CLI, as a user would); its stdout, or with `log_file` (for a
    long command, to follow as it runs) nothing: its stdout and stderr go there."""
    cmd = [*NMC, *args]
    log("$ nmc " + " ".join(args) + (f"  (log: {log_file})" if log_file else ""))
    if log_file is not None:
        with open(log_file, "a") as out:
            if subprocess.run(cmd, stdout=out, stderr=out, cwd=ROOT).returncode != 0:
                raise SystemExit(f"nmc {' '.join(args)} failed, see {log_file}")
        return ""
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"nmc {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def write_json(path: Path, value) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    tmp.replace(path)


class Bench:
    def __init__(self, out: Path, weights: Path, workers: int = WORKERS):
        self.out, self.weights, self.workers = out, weights, workers
        out.mkdir(parents=True, exist_ok=True)
        self._data = None

    @property
    def data(self):
        if self._data is None:
            self._data = load_dataset("fashion-mnist", IMG, normalization="imagenet")
        return self._data

    # ---------------------------------------------------------------- features

    def backbone(self) -> torch.nn.Module:
        model, _ = build_model(ARCH, {"img_size": IMG}, weights=self.weights)
        return model.eval()

    def features(self, split: str, n: int, model=None) -> tuple[np.ndarray, np.ndarray]:
        """Class-token features [n, 384] and labels of the first n images of `split`,
        computed in chunks cached on disk."""
        folder = self.out / "features"
        folder.mkdir(exist_ok=True)
        parts = []
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            path = folder / f"{split}_{start}_{stop}.npy"
            if not path.exists():
                model = model or self.backbone()
                with torch.no_grad(), torch_threads(THREADS):
                    feats = model(self.data[split].images[start:stop]).numpy()
                np.save(path.with_suffix(".tmp.npy"), feats)
                path.with_suffix(".tmp.npy").replace(path)
                log(f"features {split} {start}:{stop}")
            parts.append(np.load(path))
        return np.concatenate(parts), self.data[split].labels[:n].numpy()

    # ---------------------------------------------------------------- probe

    def probe(self) -> dict:
        path = self.out / "probe.json"
        if path.exists():
            return json.loads(path.read_text())
        xtr, ytr = self.features("train", N_TRAIN)
        xva, yva = self.features("val", N_VAL)
        best = None
        for l2 in L2_GRID:
            w, b = fit_logistic(xtr, ytr, l2)
            acc = float(((xva @ w.T + b).argmax(1) == yva).mean())
            log(f"probe l2={l2}: val top-1 {acc:.2%}")
            if best is None or acc > best[0]:
                best = (acc, l2, w, b)
        acc, l2, w, b = best
        state = torch.load(self.weights, map_location="cpu", weights_only=True)
        state["head.weight"] = torch.from_numpy(w.astype(np.float32))
        state["head.bias"] = torch.from_numpy(b.astype(np.float32))
        torch.save(state, self.out / "classifier.pth")
        nmc("export", ARCH, "--set", f"img_size={IMG}", "--set", "num_classes=10",
            "--weights", str(self.out / "classifier.pth"), "-o", str(self.classifier))
        train_acc = float(((xtr @ w.T + b).argmax(1) == ytr).mean())
        result = {"l2": l2, "val": acc, "train": train_acc, "n_train": N_TRAIN, "n_val": N_VAL}
        write_json(path, result)
        return result

    @property
    def classifier(self) -> Path:
        return self.out / "classifier.pt2"

    def classifier_module(self, state: dict | None = None) -> torch.nn.Module:
        model, _ = build_model(ARCH, {"img_size": IMG, "num_classes": 10},
                               weights=self.out / "classifier.pth")
        if state is not None:
            model.load_state_dict(state)
        return model.eval()

    # ---------------------------------------------------------------- rows

    def calib(self) -> Path:
        """CALIB train images, one model input each: [CALIB, 1, 3, IMG, IMG]."""
        path = self.out / "calib.npy"
        if not path.exists():
            np.save(path, self.data["train"].images[:CALIB].numpy()[:, None])
        return path

    def row(self, name: str, spec: str, model_file: Path, reference: Path | None,
            sparsity: str | None, with_reference: bool = True, limit: int = N_EVAL
            ) -> dict:
        """Compile `model_file` with `spec` (None: dense, or a FILE.json), run it on the
        emulator on the N_EVAL test images against the PyTorch `reference` (None: the
        model file pruned to the configuration the compiler chose), and its report."""
        folder = self.out / "rows" / name
        done = folder / "row.json"
        cached = json.loads(done.read_text()) if done.exists() else None
        if cached is not None:
            if cached["images"] >= limit:
                return cached
            # evaluated on fewer images (an earlier run): the evaluation alone reruns
            # (program and report are kept); the smaller one stays beside it
            if (folder / "eval.json").exists():
                (folder / "eval.json").replace(folder / f"eval-{cached['images']}.json")
        folder.mkdir(parents=True, exist_ok=True)
        prog, cfg = folder / "prog.bin", folder / "sparsity.json"
        t0 = time.time()
        if not prog.exists():
            extra = []
            if sparsity is not None:
                extra = ["--sparsity", sparsity, "--sparsity-out", str(cfg)]
                if sparsity.startswith("elsa:"):
                    extra += ["--calib", str(self.calib())]
            out = nmc("compile", str(model_file), "-o", str(prog), "-q", *extra)
            (folder / "compile.txt").write_text(out)
        compile_s = time.time() - t0
        if reference is None and with_reference:
            reference = folder / "reference.pt2"
            if not reference.exists():
                self.export_pruned(model_file, cfg, reference)
        if not (folder / "report.json").exists():
            x = folder / "x.npy"
            np.save(x, self.data["test"].images[:1].numpy())
            nmc("run", str(prog), "-i", str(x), "--report-json", str(folder / "report.json"),
                "-q")
        t1 = time.time()
        if not (folder / "eval.json").exists():
            compare = ["--reference", str(reference)] if with_reference else []
            nmc("eval", str(prog), *DATA, "--limit", str(limit), *compare,
                "--workers", str(self.workers), "--json", str(folder / "eval.json"), "-q")
        report = json.loads((folder / "report.json").read_text())
        evaluation = json.loads((folder / "eval.json").read_text())
        linear = sum(layer["cycles"] for layer in report["layers"] if layer["kind"] == "linear")
        result = {"name": name, "spec": spec, "cycles": report["total_cycles"],
                  "linear_cycles": linear, "top1": evaluation["accuracy"],
                  "pytorch_top1": evaluation.get("reference_accuracy"),
                  "agreeing": evaluation.get("agreeing"), "images": evaluation["images"],
                  "compile_s": cached["compile_s"] if cached else round(compile_s, 1),
                  "eval_s": round(time.time() - t1, 1),
                  "config": json.loads(cfg.read_text()) if cfg.exists() else None}
        write_json(done, result)
        log(f"row {name}: {result}")
        return result

    def export_pruned(self, model_file: Path, cfg: Path, out: Path) -> None:
        """The PyTorch reference of a sparse program: the model file's weights masked to the
        configuration (models/nm_sparsity.apply_nm), exported as a model file."""
        from nmc.models.nm_sparsity import apply_nm
        from nmc.models.registry import export_to_file

        state = torch.export.load(str(model_file)).state_dict
        model = self.classifier_module({k: v.clone() for k, v in state.items()})
        pruned = apply_nm(model, sparse_layers(cfg))
        export_to_file(pruned, torch.zeros(1, 3, IMG, IMG), out)

    def flow_config(self, spec: str) -> Path:
        """The configuration file of "flow:BUDGET" (FLOW_SEED's flow row)."""
        budget = spec[len("flow:"):]
        path = self.out / "rows" / flow_row(budget, FLOW_SEED) / "model.sparsity.json"
        if not path.exists():
            raise SystemExit(f"{spec}: run the supernet stage first ({path})")
        return path

    def oneshot(self, specs: list[str]) -> list[dict]:
        rows = []
        for spec in specs:
            sparsity = None if spec == "dense" else spec
            if spec.startswith("flow:"):
                sparsity = str(self.flow_config(spec))
            reference = self.classifier if spec == "dense" else None
            rows.append(self.row(f"oneshot-{slug(spec)}", spec, self.classifier, reference,
                                 sparsity, spec in REFERENCE_ROWS, N_EVAL))
        return rows

    # ---------------------------------------------------------------- fine-tune

    def finetune(self, spec: str, seed: int, column: Column = Column()) -> dict:
        """The one-shot configuration of `spec`, fine-tuned (FINETUNE_*, `column`'s
        steps and learning rate), compiled with that configuration and evaluated as the
        one-shot rows."""
        from nmc.models.registry import export_to_file

        name = finetune_name(spec, seed, column)
        folder = self.out / "rows" / name
        folder.mkdir(parents=True, exist_ok=True)
        model_file, cfg = folder / "model.pt2", folder / "config.json"
        self.write_choice(spec, cfg)
        if not model_file.exists():
            model = self.classifier_module()
            net = self.fixed_nm(model, spec)
            self.distill(model, net, seed, column.steps, Recipe(lr=column.lr),
                         folder / "ckpt.pt", name)
            net.bake([0] * len(net.params))
            export_to_file(model, torch.zeros(1, 3, IMG, IMG), model_file)
        # the optimizer's state made the checkpoint 3x the model: only a resume needs it
        (folder / "ckpt.pt").unlink(missing_ok=True)
        dense = spec == "dense"
        return self.row(name, f"{spec} + fine-tune ({column.label()}, seed {seed})",
                        model_file, model_file if dense else None,
                        None if dense else str(cfg))

    def sparsify(self, budget: str, seed: int, distill: bool = False,
                 lr: float = SPARSIFY["lr"]) -> dict:
        """ELSA's flow (`nmc sparsify --budget BUDGET`, SPARSIFY; with `distill`, `nmc
        sparsify --distill`, and at another `lr`: rows of their own) from the classifier,
        its result compiled with the configuration it chose and evaluated as the other
        rows."""
        how = ["--budget", budget, *(["--distill"] if distill else [])]
        shown = how + ([] if lr == SPARSIFY["lr"] else ["--lr", f"{lr:g}"])
        return self.run_sparsify(flow_row(budget, seed, distill, lr),
                                 f"`nmc sparsify {' '.join(shown)}` (seed {seed})", how,
                                 {**SPARSIFY, "lr": lr}, SPARSIFY_TRAIN, seed)

    def given(self, spec: str, seed: int) -> dict:
        """`nmc sparsify --sparsity FILE.json --distill` (GIVEN) on the one-shot
        configuration of `spec`, compiled and evaluated as the other rows."""
        name = given_row(spec, seed)
        cfg = self.out / "rows" / name / "config.json"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        self.write_choice(spec, cfg)
        return self.run_sparsify(name, f"`nmc sparsify --sparsity` {spec}'s configuration "
                                       f"`--distill` (seed {seed})",
                                 ["--sparsity", str(cfg), "--distill"], GIVEN, N_TRAIN, seed)

    def run_sparsify(self, name: str, label: str, how: list[str], settings: dict,
                     train: int, seed: int) -> dict:
        """Row `name`: `nmc sparsify` on the classifier (`how`: its --budget or --sparsity
        and flags; `settings`: its --OPTION values; `train` train images, SPARSIFY_VAL val),
        its model compiled with the configuration it wrote and evaluated as the other rows."""
        folder = self.out / "rows" / name
        folder.mkdir(parents=True, exist_ok=True)
        model_file = folder / "model.pt2"
        if not model_file.exists():
            options = [a for k, v in settings.items() for a in (f"--{k}", str(v))]
            # resumes from its checkpoint (model.ckpt) if killed
            nmc("sparsify", str(self.classifier), *DATA, *how, *options,
                "--subset", f"train={train}", "--subset", f"val={SPARSIFY_VAL}",
                "--subset", f"test={N_EVAL}", "--seed", str(seed), "-o", str(model_file),
                "--report-json", str(folder / "sparsify.json"), "-q",
                log_file=folder / "sparsify.log")
            (folder / "model.ckpt").unlink(missing_ok=True)  # ~3x the model; done with
        return self.row(name, label, model_file, None, str(folder / "model.sparsity.json"))

    def write_choice(self, spec: str, path: Path) -> None:
        """The one-shot row's configuration of `spec` as a --sparsity file."""
        path.write_text(json.dumps(self.oneshot_choice(spec), indent=1) + "\n")

    def oneshot_choice(self, spec: str) -> dict[str, str]:
        """The per-layer patterns the one-shot row of `spec` compiled with ({} for dense:
        the whole dense classifier fine-tuned, does it gain?)."""
        if spec == "dense":
            return {}
        source = self.out / "rows" / f"oneshot-{slug(spec)}" / "sparsity.json"
        if not source.exists():
            raise SystemExit(f"fine-tune {spec}: run the one-shot row first ({source})")
        return json.loads(source.read_text())

    def fixed_nm(self, model: torch.nn.Module, spec: str):
        """`model` run at the one-shot configuration of `spec` (FixedNM)."""
        from nmc.training.nm_supernet import FixedNM

        config = {k: v for k, v in self.oneshot_choice(spec).items() if v != "dense"}
        return FixedNM(model, [f"{k}.weight" for k in config],
                       [tuple(int(x) for x in v.split(":")) for v in config.values()])

    def distill(self, model: torch.nn.Module, net, seed: int, steps: int, recipe: Recipe,
                ckpt: Path | None = None, name: str = "") -> None:
        """`steps` steps of the fine-tune (FINETUNE_*, `recipe`) of `model` run as `net`
        (FixedNM: masks recomputed every step), resumable from `ckpt`; ends in eval mode."""
        feats, labels = self.features("train", N_TRAIN)
        head = torch.load(self.out / "classifier.pth", map_location="cpu", weights_only=True)
        teacher = torch.from_numpy(feats) @ head["head.weight"].T + head["head.bias"]
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr,
                                weight_decay=recipe.weight_decay)
        step = 0
        if ckpt is not None and ckpt.exists():
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            step = state["step"]
        model.train()
        losses = []
        with torch_threads(THREADS):
            while step < steps:
                gen = torch.Generator().manual_seed(seed * 100003 + step)
                idx = torch.randperm(N_TRAIN, generator=gen)[:FINETUNE_BATCH]
                for group in opt.param_groups:
                    group["lr"] = recipe.lr * 0.5 * (1 + np.cos(np.pi * step / steps))
                logits = net.forward(self.data["train"].images[idx])
                loss = distillation_loss(logits, teacher[idx], torch.from_numpy(labels)[idx],
                                         ce_weight=recipe.ce)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                losses.append(float(loss.detach()))
                if ckpt is not None and (step % SAVE_EVERY == 0 or step == steps):
                    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                                "step": step}, ckpt)
                    log(f"{name}: step {step}/{steps}, loss "
                        f"{np.mean(losses[-SAVE_EVERY:]):.3f}")
        model.eval()

    def recipes(self, specs: list[str], recipes: list[Recipe], seeds: list[int],
                steps: int) -> list[dict]:
        """What the fine-tune's recipe does: each configuration of `specs` fine-tuned with
        each recipe (PyTorch only: a diagnosis, not a row; the emulator equals PyTorch on
        every row), top-1 on the first N_EVAL test images. The default recipe's result is
        the fine-tuned row's PyTorch top-1 where that row exists."""
        path = self.out / "recipes.json"
        archived = summary(self.out, "recipes.json")
        done = json.loads(archived.read_text()) if archived.exists() else []
        rows = load_rows(self.out)
        test = self.data["test"]
        for spec in specs:
            for recipe in recipes:
                for seed in seeds:
                    key = {"spec": spec, **asdict(recipe), "seed": seed, "steps": steps}
                    if any(r["recipe"] == key for r in done):
                        continue
                    row = rows.get(finetune_name(spec, seed, Column(steps, recipe.lr)))
                    # that row was fine-tuned with Recipe(lr=its column's lr)
                    if recipe == Recipe(lr=recipe.lr) and row is not None \
                            and row["images"] == N_EVAL:
                        top1 = row["pytorch_top1"]
                    else:
                        model = self.classifier_module()
                        net = self.fixed_nm(model, spec)
                        self.distill(model, net, seed, steps, recipe)
                        net.bake([0] * len(net.params))
                        with torch.no_grad(), torch_threads(THREADS):
                            pred = torch.cat([model(test.images[i:i + CHUNK]).argmax(-1)
                                              for i in range(0, N_EVAL, CHUNK)])
                        top1 = float((pred == test.labels[:N_EVAL]).float().mean())
                    done.append({"recipe": key, "top1": top1})
                    write_json(path, done)
                    log(f"recipe {key}: top-1 {top1:.1%}")
        return done

    # ---------------------------------------------------------------- diagnosis

    def diagnose(self) -> list[dict]:
        """Why ELSA's one-shot choice does or does not win. Per one-shot configuration,
        on the CALIB train images `nmc compile --calib` ranked configurations on:
        - proxy: what ELSA's search minimises, the sum over layers of each layer's output
          error alone (nmc's `Sensitivity`, the compiler's code, dense + the target's
          patterns per layer as `assign-sparsity` asks for them), and the root of the sum
          of their squares (how independent errors add);
        - joint: the output error of the whole configuration at once (every layer masked,
          `Sensitivity.joint_error`), ||y_masked - y|| / ||y|| over the logits, on those
          images (what `rank=joint` ranks by) and on HELD_OUT val images the searches
          never saw;
        - pruned energy: the share of the sparsified weights' sum of squares the masks
          remove (over the 48 block linears), and the largest share of one layer."""
        from nmc.compiler.frontend.weights import WeightStore
        from nmc.compiler.sparsity.sensitivity import Sensitivity
        from nmc.isa.target import load_target
        from nmc.models.nm_sparsity import nm_mask

        path = self.out / "diagnosis.json"
        archived = summary(self.out, "diagnosis.json")
        results = json.loads(archived.read_text()) if archived.exists() else []
        todo = [spec for spec in TABLE_ORDER if spec not in {r["spec"] for r in results}
                and self.oneshot_config(spec) is not None]
        if not todo:
            return results
        patterns = [None, *load_target("sta_ref").sparse_patterns]
        store = WeightStore.from_file(self.classifier)
        sens = Sensitivity(store, str(self.calib()), (1, 3, IMG, IMG))
        held_out = Sensitivity(store, [x[None] for x in self.data["val"].images[:HELD_OUT]],
                               (), keep=False)
        weights = dict(self.classifier_module().named_parameters())
        for spec in todo:
            config = self.oneshot_config(spec)
            params = {f"{layer}.weight": p for layer, p in config.items()}
            errors = [sens.errors(param, patterns)[patterns.index(p)]
                      for param, p in params.items()]
            joint, joint_held_out = sens.joint_error(params), held_out.joint_error(params)
            removed, total, worst = 0.0, 0.0, 0.0
            for name, w in weights.items():
                layer = name[:-len(".weight")]
                if not (name.startswith("blocks.") and name.endswith(".weight")
                        and w.dim() == 2):
                    continue
                energy = float((w.detach() ** 2).sum())
                cut = 0.0
                if layer in config:
                    keep = nm_mask(w.detach(), *config[layer]).to(w.dtype)
                    cut = float(((w.detach() * (1 - keep)) ** 2).sum())
                removed, total, worst = removed + cut, total + energy, max(worst, cut / energy)
            results.append({"spec": spec, "proxy": sum(errors),
                            "proxy_rss": float(np.sqrt(np.sum(np.square(errors)))),
                            "joint": joint, "joint_held_out": joint_held_out,
                            "pruned_energy": removed / total, "worst_layer_energy": worst})
            log(f"diagnosis {results[-1]}")
            results.sort(key=lambda r: TABLE_ORDER.index(r["spec"]))
            write_json(path, results)
        return results

    def oneshot_config(self, spec: str) -> dict[str, tuple[int, int]] | None:
        """The sparse layers of a one-shot row's configuration (its --sparsity-out; None
        before the row was compiled)."""
        if spec == "dense":
            return {}
        cfg = self.out / "rows" / f"oneshot-{slug(spec)}" / "sparsity.json"
        return sparse_layers(cfg) if cfg.exists() else None

    # ---------------------------------------------------------------- dense test

    def dense_test(self) -> dict:
        path = self.out / "dense_test.json"
        if path.exists():
            return json.loads(path.read_text())
        x, y = self.features("test", len(self.data["test"]))
        state = torch.load(self.out / "classifier.pth", map_location="cpu", weights_only=True)
        w, b = state["head.weight"].numpy(), state["head.bias"].numpy()
        pred = (x @ w.T + b).argmax(1)
        result = {"images": len(y), "top1": float((pred == y).mean()),
                  "top1_first_n_eval": float((pred[:N_EVAL] == y[:N_EVAL]).mean())}
        write_json(path, result)
        return result


def sparse_layers(cfg: Path) -> dict[str, tuple[int, int]]:
    """The sparse layers of a configuration file (`--sparsity-out`): layer -> (N, M)."""
    from nmc.compiler.sparsity.spec import parse_pattern, read_config

    config = {k: parse_pattern(v, str(cfg)) for k, v in read_config(str(cfg)).items()}
    return {k: p for k, p in config.items() if p is not None}


def diagnosis_table(results: list[dict], out: Path) -> str:
    """The diagnosis beside each configuration's speed-up and accuracies (one-shot, and
    after each fine-tune column's fine-tune)."""
    rows = load_rows(out)
    columns = fine_tune_columns(rows)
    after = "".join(f" top-1 after fine-tune, {c.label()} (mean over seeds) |" for c in columns)
    lines = ["| configuration | linear speed-up | ELSA's proxy (sum of single-layer errors) | "
             "root sum of squares | joint error (all layers at once, the 8 calibration images) | "
             "joint error, "
             f"{HELD_OUT} val images | weight energy pruned (worst layer) | "
             f"top-1 one-shot, first {N_EVAL} |{after}",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(columns)]
    for r in results:
        one = rows[f"oneshot-{slug(r['spec'])}"]
        cells = ""
        for column in columns:
            tuned = [t["top1"] for t in tuned_rows(rows, r["spec"], column).values()]
            cells += f" {np.mean(tuned):.1%} ({len(tuned)}) |" if tuned else " not run |"
        lines.append(f"| {r['spec']} | {linear_speed_up(rows, r['spec']):.2f}x | "
                     f"{r['proxy']:.2f} | {r['proxy_rss']:.2f} | {r['joint']:.2f} | "
                     f"{r['joint_held_out']:.2f} | {r['pruned_energy']:.1%} "
                     f"({r['worst_layer_energy']:.1%}) | {one['top1']:.1%} |{cells}")
    return "\n".join(lines) + "\n\n" + rank_correlations(results, rows, columns)


def rank_correlations(results: list[dict], rows: dict, columns: list[Column]) -> str:
    """Spearman's rank correlation of each diagnosis measure with the top-1, one-shot and
    after each column's fine-tune (mean over seeds), over the sparse configurations that
    have both (their count in brackets)."""
    def spearman(x, y) -> float:
        rx, ry = (np.argsort(np.argsort(v)).astype(float) for v in (x, y))
        return float(np.corrcoef(rx, ry)[0, 1])

    measures = [("ELSA's proxy", "proxy"), ("root sum of squares", "proxy_rss"),
                ("joint error", "joint"), ("joint error, held out", "joint_held_out"),
                ("weight energy pruned", "pruned_energy")]
    sparse = [r for r in results if r["spec"] != "dense"]
    # per accuracy: (the configurations that have it, its top-1 for each)
    accuracies = [(sparse, [rows[f"oneshot-{slug(r['spec'])}"]["top1"] for r in sparse])]
    for column in columns:
        tuned = [(r, np.mean([t["top1"] for t in found.values()])) for r in sparse
                 if (found := tuned_rows(rows, r["spec"], column))]
        accuracies.append(([r for r, _ in tuned], [top1 for _, top1 in tuned]))
    lines = ["| measure | with top-1 one-shot |"
             + "".join(f" with top-1 after fine-tune, {c.label()} |" for c in columns),
             "|---|---|" + "---|" * len(columns)]
    for label, key in measures:
        lines.append(f"| {label} |" + "".join(
            f" {spearman([r[key] for r in configs], top1):+.2f} ({len(configs)}) |"
            for configs, top1 in accuracies))
    return "\n".join(lines)


def load_rows(out: Path) -> dict[str, dict]:
    """Every finished row: the archived ones (RESULTS), then those of `out` (newer)."""
    rows = {}
    for path in [*sorted((RESULTS / "rows").glob("*.json")),
                 *sorted((out / "rows").glob("*/row.json"))]:
        r = json.loads(path.read_text())
        rows[r["name"]] = r
    return rows


def summary(out: Path, name: str) -> Path:
    """A stage's summary file (SUMMARIES): `out`'s, or else the archived one."""
    return out / name if (out / name).exists() else RESULTS / name


def archive(out: Path) -> None:
    """Copy what the tables are made of from `out` to RESULTS (git tracks it): each
    finished row's row.json as rows/NAME.json, and the stages' summaries."""
    (RESULTS / "rows").mkdir(parents=True, exist_ok=True)
    for path in (out / "rows").glob("*/row.json"):
        (RESULTS / "rows" / f"{path.parent.name}.json").write_text(path.read_text())
    for name in SUMMARIES:
        if (out / name).exists():
            (RESULTS / name).write_text((out / name).read_text())


# the rows of ELSA's flow: sparsify-BUDGET-sSEED; with --distill sparsify_distill-...; at a
# learning rate other than SPARSIFY's, a rate_tag() after either: sparsify_distill_lr1em5-...
FLOW_ROW = re.compile(rf"sparsify(_distill)?({RATE_TAG})?-")


def flow_row(budget: str, seed: int, distill: bool = False, lr: float = SPARSIFY["lr"]) -> str:
    """The row of one run of ELSA's flow (stage supernet)."""
    name = "sparsify_distill" if distill else "sparsify"
    return f"{name}{rate_tag(lr, SPARSIFY['lr'])}-{slug(budget)}-s{seed}"


GIVEN_NAME = "given_distill"  # the rows of stage given: given_distill-SPEC-sSEED


def given_row(spec: str, seed: int) -> str:
    """The row of stage given: `nmc sparsify --sparsity` on the configuration of `spec`."""
    return f"{GIVEN_NAME}-{slug(spec)}-s{seed}"


def finetune_name(spec: str, seed: int, column: Column = Column()) -> str:
    """The row of a fine-tune: the default column keeps the first run's names."""
    return f"finetune{column.tag()}-{slug(spec)}-s{seed}"


def tuned_rows(rows: dict, spec: str, column: Column = Column()) -> dict[int, dict]:
    """The fine-tuned rows of `spec` in `column`, by seed."""
    prefix = finetune_name(spec, 0, column)[:-1]
    return {int(name[len(prefix):]): r for name, r in rows.items()
            if name.startswith(prefix) and name[len(prefix):].isdigit()}


def mean_sd(values: list[float], sign: str = "") -> str:
    """'m ± sd' (sample standard deviation over seeds), in points; sign="+" shows it."""
    if len(values) == 1:
        return f"{values[0] * 100:{sign}.1f}"
    return f"{np.mean(values) * 100:{sign}.1f} ± {np.std(values, ddof=1) * 100:.1f}"


def finetune_cell(tuned: dict[int, dict]) -> str:
    if not tuned:
        return "not run"
    accs = [tuned[seed]["top1"] for seed in sorted(tuned)]
    images = {r["images"] for r in tuned.values()}
    seeds = " / ".join(f"{a:.1%}" for a in accs)
    n = f"first {min(images)}" if len(images) == 1 else "first " + "/".join(map(str, images))
    if len(accs) == 1:
        return f"{accs[0]:.1%} (seed {next(iter(tuned))}, {n})"
    return f"**{mean_sd(accs)} %** (seeds {', '.join(map(str, sorted(tuned)))}: {seeds}; {n})"


def fine_tune_columns(rows: dict) -> list[Column]:
    """The fine-tune columns that have rows, the default first."""
    found = {Column.of(name) for name in rows if name.startswith("finetune")}
    return sorted(found, key=lambda c: (c != Column(), c.steps, -c.lr))


def table(out: Path) -> str:
    """The Markdown table of every finished row (one line per configuration)."""
    rows = load_rows(out)
    dense = rows.get("oneshot-dense")
    if dense is None:
        return "(no dense row yet)"
    columns = fine_tune_columns(rows)
    after = " | ".join(f"top-1 after fine-tune, {c.label()} (mean ± sd over seeds)"
                       for c in columns)
    lines = [f"| configuration | linear speed-up | end-to-end speed-up | top-1 one-shot, "
             f"first {N_EVAL} | {after} | agreement with PyTorch |",
             "|---|---|---|---|" + "---|" * len(columns) + "---|"]

    def pct(value) -> str:
        return f"{value:.1%}" if value is not None else ""

    for spec in TABLE_ORDER:
        one = rows.get(f"oneshot-{slug(spec)}")
        if one is None:  # not run (yet, or on the machine whose rows are archived)
            continue
        full = one["top1"] if one["images"] == N_EVAL else None
        tuned = {c: tuned_rows(rows, spec, c) for c in columns}
        cells = " | ".join("-" if spec == "dense" and not tuned[c]
                           else finetune_cell(tuned[c]) for c in columns)
        agree = [f"{one['agreeing']}/{one['images']}" if one["agreeing"] is not None
                 else "not compared"]
        for c in columns:
            done = list(tuned[c].values())
            if done:
                agreeing = sum(r["agreeing"] or 0 for r in done)
                agree.append(f"{agreeing}/{sum(r['images'] for r in done)} "
                             f"(fine-tuned {c.label()}, {len(done)} "
                             f"seed{'s' if len(done) > 1 else ''})")
        lines.append(f"| {spec} | {linear_speed_up(rows, spec):.2f}x | "
                     f"{dense['cycles'] / one['cycles']:.2f}x | {pct(full)} | "
                     f"{cells} | {'; '.join(agree)} |")
    return "\n".join(lines)


def flow_table(out: Path) -> str:
    """ELSA's whole flow (stage supernet): trained throughout, so a table of its own."""
    rows = load_rows(out)
    dense = rows.get("oneshot-dense")
    flows = {name: r for name, r in rows.items()
             if FLOW_ROW.match(name) or name.startswith(GIVEN_NAME + "-")}
    if dense is None or not flows:
        return ""
    lines = ["| run | linear speed-up | end-to-end speed-up | training | top-1, first "
             f"{N_EVAL} | agreement with PyTorch |", "|---|---|---|---|---|---|"]
    # each run's seeds (its name without -sSEED): a run of several gets a mean ± sd row
    runs: dict[str, list[tuple[int, dict, float, float]]] = {}
    for name, r in sorted(flows.items()):
        if name.startswith(GIVEN_NAME + "-"):
            training = (f"fine-tune {GIVEN['finetune-epochs']} epochs of {N_TRAIN} train "
                        f"images in batches of {GIVEN['batch-size']}, lr {GIVEN['lr']:g}, "
                        f"distillation")
        else:
            distill, rate = FLOW_ROW.match(name).groups()
            training = (f"supernet {SPARSIFY['epochs']} epochs + search on {SPARSIFY_VAL} val "
                        f"images + fine-tune {SPARSIFY['finetune-epochs']} epochs, of "
                        f"{SPARSIFY_TRAIN} train images in batches of {SPARSIFY['batch-size']}"
                        f", lr {rate_of(rate, SPARSIFY['lr']):g}, "
                        f"{'distillation' if distill else 'cross-entropy'}")
        linear, whole = dense["linear_cycles"] / r["linear_cycles"], dense["cycles"] / r["cycles"]
        lines.append(f"| {r['spec']} | {linear:.2f}x | {whole:.2f}x | {training} | "
                     f"{r['top1']:.1%} | {r['agreeing']}/{r['images']} |")
        run, _, seed = name.rpartition("-s")
        runs.setdefault(run, []).append((int(seed), r, linear, whole))
    # each seed may choose its own configuration, so its speed-ups vary too
    for run, by_seed in sorted(runs.items()):
        if len(by_seed) < 2:
            continue
        seeds, results, linear, whole = zip(*sorted(by_seed, key=lambda x: x[0]))
        label = results[0]["spec"].rpartition(" (seed")[0]
        lines.append(
            f"| {label}, seeds {', '.join(map(str, seeds))} | {np.mean(linear):.2f}x "
            f"({' / '.join(f'{x:.2f}' for x in linear)}) | {np.mean(whole):.2f}x | mean ± sd "
            f"over seeds | **{mean_sd([r['top1'] for r in results])} %** | "
            f"{sum(r['agreeing'] for r in results)}/{sum(r['images'] for r in results)} |")
    return "\n".join(lines)


def recipe_table(out: Path) -> str:
    """The recipe stage's results (recipes.json): PyTorch top-1 by configuration and
    recipe, seeds side by side."""
    path = summary(out, "recipes.json")
    if not path.exists():
        return ""
    cells: dict[tuple, list[str]] = {}
    for r in json.loads(path.read_text()):
        k = r["recipe"]
        key = (k["spec"], k["steps"], k["lr"], k["ce"], k["weight_decay"])
        cells.setdefault(key, []).append(f"{r['top1']:.1%} (seed {k['seed']})")
    lines = [f"| configuration | steps | lr | cross-entropy weight | weight decay | PyTorch "
             f"top-1, first {N_EVAL} |", "|---|---|---|---|---|---|"]
    for (spec, steps, lr, ce, wd), tops in cells.items():
        lines.append(f"| {spec} | {steps} | {lr:g} | {ce:g} | {wd:g} | {' / '.join(tops)} |")
    return "\n".join(lines)


# fine-tuned pairs compared seed by seed (a seed fixes the fine-tune's batches, so the two
# rows of a seed saw the same images in the same order): ELSA against the uniform patterns
# of nearly equal modelled speed-up, and ELSA 2.5x against the nearest uniform (2:4 / 4:8,
# 1.92x: no uniform pattern of the target lies between them and 1:4 / 2:8 at 3.5x)
PAIRS = [("elsa:speedup=2", "2:4"), ("elsa:speedup=2", "4:8"), ("4:8", "2:4"),
         ("elsa:speedup=2.5", "4:8"), ("elsa:speedup=2.5", "2:4"),
         ("elsa:speedup=2,rank=joint", "4:8"), ("elsa:speedup=2,rank=joint", "elsa:speedup=2"),
         ("elsa:speedup=2.5,rank=joint", "4:8"),
         ("elsa:speedup=2.5,rank=joint", "elsa:speedup=2.5"),
         ("elsa:speedup=2,rank=energy", "4:8"), ("elsa:speedup=2,rank=energy", "elsa:speedup=2"),
         ("elsa:speedup=2.5,rank=energy", "4:8"),
         ("elsa:speedup=2.5,rank=energy", "elsa:speedup=2.5"),
         ("flow:speedup=2.5", "2:8"), ("flow:speedup=2.5", "4:8"),
         ("flow:speedup=2.5", "elsa:speedup=2.5"), ("elsa:speedup=2.5", "2:8"),
         # the two uniform patterns of equal speed-up at 3.5x
         ("2:8", "1:4"),
         # the target: within 1 point of the dense model (fine-tuned alike)
         ("elsa:speedup=2.5", "dense"), ("elsa:speedup=2.5,rank=energy", "dense"),
         ("4:8", "dense"), ("elsa:speedup=2", "dense")]


def linear_speed_up(rows: dict, spec: str) -> float:
    """The modelled linear speed-up of `spec`'s one-shot row over the dense one's (the
    fine-tuned rows of a configuration run its program's cycles)."""
    return rows["oneshot-dense"]["linear_cycles"] / rows[f"oneshot-{slug(spec)}"]["linear_cycles"]


def paired_table(out: Path) -> str:
    """Top-1 differences of the PAIRS after fine-tune, seed by seed (same seed, same
    batches), with their mean and sample standard deviation over seeds."""
    rows = load_rows(out)
    if "oneshot-dense" not in rows:
        return ""
    lines = ["| fine-tune | A - B | linear speed-up A / B | seeds | A - B per seed (pt) | "
             "mean ± sd (pt) |", "|---|---|---|---|---|---|"]
    for column in fine_tune_columns(rows):
        for a, b in PAIRS:
            ta, tb = tuned_rows(rows, a, column), tuned_rows(rows, b, column)
            seeds = sorted(set(ta) & set(tb))
            if not seeds:
                continue
            diffs = [ta[s]["top1"] - tb[s]["top1"] for s in seeds]
            speed = " / ".join(f"{linear_speed_up(rows, x):.2f}x" for x in (a, b))
            lines.append(f"| {column.label()} | {a} - {b} | {speed} | "
                         f"{', '.join(map(str, seeds))} | "
                         f"{' / '.join(f'{d * 100:+.1f}' for d in diffs)} | "
                         f"{mean_sd(diffs, '+')} |")
    return "\n".join(lines) if len(lines) > 2 else ""


# the target's uniform patterns and dense: the points of the uniform trade-off line
UNIFORM = ("dense", "2:4", "4:8", "1:4", "2:8", "1:8")


def trade_off_table(out: Path) -> str:
    """Each mixed configuration (ELSA's, the flow's) after fine-tune against the straight
    line through the uniform patterns of nearest modelled linear speed-up below and above
    it (dense counts, at 1.00x), seed by seed: does a mixed configuration beat what
    interpolating the target's uniform patterns predicts at its speed-up?"""
    rows = load_rows(out)
    if "oneshot-dense" not in rows:
        return ""

    def speed_up(spec: str) -> float | None:
        return linear_speed_up(rows, spec) if f"oneshot-{slug(spec)}" in rows else None

    lines = ["| fine-tune | configuration | linear speed-up | uniform line between | seeds | "
             "top-1 - line per seed (pt) | mean ± sd (pt) |", "|---|---|---|---|---|---|---|"]
    for column in fine_tune_columns(rows):
        uniform = {u: (speed_up(u), tuned_rows(rows, u, column)) for u in UNIFORM}
        uniform = {u: v for u, v in uniform.items() if v[0] is not None and v[1]}
        for spec in TABLE_ORDER:
            s, tuned = speed_up(spec), tuned_rows(rows, spec, column)
            if spec in UNIFORM or s is None or not tuned:
                continue
            below = [u for u in uniform if uniform[u][0] <= s]
            above = [u for u in uniform if uniform[u][0] > s]
            if not below or not above:
                continue
            lo = max(below, key=lambda u: uniform[u][0])
            hi = min(above, key=lambda u: uniform[u][0])
            (s_lo, t_lo), (s_hi, t_hi) = uniform[lo], uniform[hi]
            seeds = sorted(set(tuned) & set(t_lo) & set(t_hi))
            if not seeds:
                continue
            w = (s - s_lo) / (s_hi - s_lo)
            diffs = [tuned[k]["top1"] - ((1 - w) * t_lo[k]["top1"] + w * t_hi[k]["top1"])
                     for k in seeds]
            lines.append(f"| {column.label()} | {spec} | {s:.2f}x | {lo} ({s_lo:.2f}x) and "
                         f"{hi} ({s_hi:.2f}x) | {', '.join(map(str, seeds))} | "
                         f"{' / '.join(f'{d * 100:+.1f}' for d in diffs)} | "
                         f"{mean_sd(diffs, '+')} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def slug(spec: str) -> str:
    return spec.replace(":", "-").replace("=", "-").replace(",", "-")


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, classes: int = 10
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on standardised-free features: min CE + l2 |W|^2."""
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y).long()
    w = torch.zeros(classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w.T + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch_threads(THREADS):
        opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stages", nargs="*", default=["features", "probe", "oneshot", "test",
                                                  "finetune", "table"])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "dinov2_fmnist")
    ap.add_argument("--weights", type=Path, default=ROOT / "bench-out" / "dinov2_vits14.pth",
                    help="the state_dict bench/dinov2_weights.py wrote")
    ap.add_argument("--finetune", action="append", metavar="SPEC",
                    help="a configuration to fine-tune (repeat; default: 2:4 and "
                         "elsa:speedup=2, the pair of nearly equal modelled speed-up; "
                         "stage recipe: dense; stage given: elsa:speedup=2.5)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="fine-tune seeds (the order of the fine-tune's batches)")
    ap.add_argument("--steps", type=int, default=FINETUNE_STEPS,
                    help="fine-tune steps (default: %(default)s; another length makes "
                         "rows of its own, a column of the table)")
    ap.add_argument("--configs", nargs="+", metavar="SPEC",
                    help="the one-shot rows to run (default: all of CONFIGS)")
    ap.add_argument("--workers", type=int, default=WORKERS,
                    help="nmc eval --workers: processes the images are sharded over "
                         "(default: %(default)s)")
    ap.add_argument("--lr", type=float,
                    help=f"peak learning rate of the fine-tune (default: {FINETUNE_LR:g}) and "
                         f"of stage supernet (nmc sparsify --lr; default: {SPARSIFY['lr']:g}); "
                         "another one makes rows of its own: a column of the table, a run of "
                         "the flow table")
    ap.add_argument("--recipe", action="append", metavar="FIELD=V,...",
                    help="recipe stage: a fine-tune recipe (lr, ce, weight_decay; repeat; "
                         "default: RECIPES)")
    ap.add_argument("--distill", action="store_true",
                    help="supernet stage: nmc sparsify --distill (rows of their own)")
    args = ap.parse_args()
    given_specs = args.finetune or ["elsa:speedup=2.5"]
    args.finetune = args.finetune or (["dense"] if "recipe" in args.stages
                                      else ["2:4", "elsa:speedup=2"])
    bench = Bench(args.out, args.weights, args.workers)
    for stage in args.stages:
        if stage == "features":
            bench.features("train", N_TRAIN)
            bench.features("val", N_VAL)
        elif stage == "probe":
            log(f"probe: {bench.probe()}")
        elif stage == "oneshot":
            bench.oneshot(args.configs or CONFIGS)
        elif stage == "finetune":
            # seed by seed, so an interrupted run leaves whole pairs
            for seed in args.seeds:
                for spec in args.finetune:
                    bench.finetune(spec, seed, Column(args.steps, args.lr or FINETUNE_LR))
        elif stage == "table":
            archive(args.out)
            text = "\n\n".join(t for t in (table(args.out), paired_table(args.out),
                                             trade_off_table(args.out), flow_table(args.out),
                                             recipe_table(args.out)) if t)
            if summary(args.out, "diagnosis.json").exists():  # the diagnose stage's, refreshed
                text += "\n\n" + diagnosis_table(bench.diagnose(), args.out)
            (args.out / "results.md").write_text(text + "\n")
            print(text)
        elif stage == "recipe":
            recipes = [parse_recipe(r) for r in args.recipe] if args.recipe else RECIPES
            for r in bench.recipes(args.finetune, recipes, args.seeds, args.steps):
                print(json.dumps(r))
        elif stage == "supernet":
            for seed in args.seeds:
                bench.sparsify("speedup=2.5", seed, args.distill,
                               args.lr or SPARSIFY["lr"])
        elif stage == "given":
            for seed in args.seeds:
                for spec in given_specs:
                    bench.given(spec, seed)
        elif stage == "diagnose":
            print(diagnosis_table(bench.diagnose(), args.out))
        elif stage == "test":
            log(f"dense on the test set: {bench.dense_test()}")
        else:
            raise SystemExit(f"unknown stage {stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
