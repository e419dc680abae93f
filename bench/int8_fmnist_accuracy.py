"""int8 vs fp32 top-1 of the pretrained DINOv2 ViT-S/14 Fashion-MNIST classifier on the
emulator (issue 16). Bench-only: needs `make bench-deps` and the classifier that
bench/bench_dinov2_fmnist.py makes (its `probe` stage: classifier.pt2, and calib.npy, the
under its --out folder).

    nice -n 10 .venv/bin/python bench/int8_fmnist_accuracy.py [--dir bench-out/dinov2_fmnist]
        [--limit 300] [--calib-images 32] [--pt2e] [--observers mse percentile:99.99]

Compiles the classifier for sta_ref (fp32) and for sta_int8 (int8 scales calibrated on the
first --calib-images training images, preprocessed as `nmc eval` feeds the program:
`nmc compile --calib`, with max |x| or each --observers' clip), runs the first --limit test images through both
programs (`nmc eval --data fashion-mnist --normalize imagenet --reference classifier.pt2`:
each prediction also compared with PyTorch fp32's), and writes the top-1 of each and the
agreement with PyTorch to BENCHMARKS.md (its own section; --no-write: print only). What it
made is kept under DIR/int8/ (an evaluation of the same --limit is reused).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sections import replace_section  # bench/, beside this script

ROOT = Path(__file__).resolve().parent.parent
NMC = [sys.executable, "-m", "nmc.cli"]


def nmc(*args: object) -> None:
    subprocess.run([*NMC, *map(str, args)], check=True, cwd=ROOT)


NOTES = """Notes (hand-written, 2026-12-04, from the rows above and runs of the first 300 test
images):

- int8 misses the issue's 0.5 pt target on this model: -0.8 pt with nmc's calibration
  (max |x| / 127 over 8 training images), -1.2 pt with the scales of torchao's PT2E flow
  (XNNPACK-style symmetric quantizer, HistogramObserver, the same 8 images; the
  10-class head runs fp32 in both). With 32 calibration images, first 300 test images:
  fp32 86.3 %, nmc's calibration 84.3 % (287/300 predictions equal to fp32's), PT2E 85.3 %
  (290/300); with 8 images: nmc's 85.7 % (292/300), PT2E 86.3 % (291/300). More images make
  max |x| larger: DINOv2's few outlier activations then coarsen the per-tensor int8 grid
  for every other value. The digits model (no such outliers) loses nothing.
- The statistics: on 1,000 images the int8 row differs from fp32 on 29 predictions and
  loses 8 of them net; the standard error of that paired difference is about
  sqrt(29) / 1000 = 0.54 pt, so -0.8 pt is 1.5 standard errors from 0 and within one of
  the 0.5 pt target: this evaluation cannot tell whether int8 meets it.
- Other observers (`--calib-observer`, the same 8 images, 2026-12-04 20:50-21:50 UTC):
  clipping the outliers does not help, it hurts. `mse` (the clip of least squared
  error) scores 85.1 %, the same top-1 as `max`, but changes 69 predictions against fp32
  where `max` changes 29 (931 vs 971 of 1,000 equal); `percentile:99.99` collapses to
  73.3 %. DINOv2's rare large activations (0.01 % of the values of a layer's input
  lie beyond the 99.99th percentile) carry information: saturating them changes the
  features more than the coarser grid of `max` does (which values and channels they
  are was not measured). The way out for per-tensor int8
  is to move the outliers out of the activations, not to clip them: per-channel
  factors folded from the LayerNorm before qkv / fc1 into the next weight (SmoothQuant's
  migration, exact in fp32), or the outlier-heavy layers kept fp32. Neither is built."""


def pt2e_model(model: Path, calib: Path) -> Path:
    """The classifier quantized with torchao's PT2E flow as the tests do it
    (tests/pt2e_helpers.py: XNNPACK-style, symmetric int8, linears and the patch
    embedding), calibrated on `calib`; saved beside it."""
    path = calib.with_name(calib.stem.replace("calib", "pt2e") + ".pt2")
    if not path.is_file():
        sys.path.insert(0, str(ROOT / "tests"))
        import torch
        from pt2e_helpers import quantize_and_save

        import torch.ao.quantization.fx._decomposed  # noqa: F401
        module = torch.export.load(model).module()
        inputs = [torch.from_numpy(x) for x in np.load(calib)]
        quantize_and_save(module, inputs[0], path, calib=inputs)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=ROOT / "bench-out" / "dinov2_fmnist")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--pt2e", action="store_true",
                    help="also a row quantized with torchao's PT2E flow (its HistogramObserver "
                         "activation scales) on the same calibration images (needs torchao)")
    ap.add_argument("--observers", nargs="*", default=[], metavar="OBSERVER",
                    help="also a row calibrated with each of these `--calib-observer`s "
                         "(mse, percentile:P) on the same calibration images")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    model = args.dir / "classifier.pt2"
    out = args.dir / "int8"
    out.mkdir(exist_ok=True)
    calib = out / f"calib{args.calib_images}.npy"
    if not calib.is_file():
        from nmc.models.datasets import load_dataset

        train = load_dataset("fashion-mnist", 112, normalization="imagenet")["train"]
        np.save(calib, train.images[:args.calib_images].numpy()[:, None])
    rows = {}
    programs = [("sta_ref", model, []),
                (f"sta_int8_calib{args.calib_images}", model, ["--calib", calib])]
    for observer in args.observers:
        programs.append((f"sta_int8_calib{args.calib_images}_{observer.replace(':', '')}",
                         model, ["--calib", calib, "--calib-observer", observer]))
    if args.pt2e:
        programs.append((f"sta_int8_pt2e{args.calib_images}", pt2e_model(model, calib), []))
    for target, source, extra in programs:
        prog = out / f"{target}.bin"
        if not prog.is_file():
            nmc("compile", source, "--target", target.split("_")[0] + "_" +
                target.split("_")[1], *extra, "-o", prog, "-q")
        result = out / f"{target}.eval.json"
        start = time.time()
        if not result.is_file() or json.loads(result.read_text())["images"] != args.limit:
            nmc("eval", prog, "--data", "fashion-mnist", "--normalize", "imagenet",
                "--limit", args.limit, "--reference", model, "--json", result, "-q")
            # the run's wall time (the emulator and the PyTorch reference), kept with it
            res = {**json.loads(result.read_text()), "seconds": time.time() - start}
            result.write_text(json.dumps(res, indent=2) + "\n")
        res = json.loads(result.read_text())
        rows[target] = (res, res["seconds"])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = " ".join(["nice -n 10 .venv/bin/python bench/int8_fmnist_accuracy.py",
                    *sys.argv[1:]])
    ref = rows["sta_ref"][0]  # the PyTorch top-1 is the same in every row
    lines = [f"| {t} | {r['accuracy']:.1%} | {r['agreeing']}/{r['images']} | "
             f"{s / r['images']:.2f} s |" for t, (r, s) in rows.items()]  # s: with PyTorch
    text = (f"## int8 accuracy on real data: DINOv2 ViT-S/14 on Fashion-MNIST (issue 16)\n\n"
            f"Measured {when} with\n\n    {cmd}\n\n"
            f"- machine: `{platform.node()}`, Python {platform.python_version()}, load "
            f"average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n"
            f"- model: bench_dinov2_fmnist.py's classifier (pretrained DINOv2 ViT-S/14 at "
            f"112x112 + a linear probe), dense; sta_int8 scales calibrated on the first "
            f"{args.calib_images} training images; the 10-class head stays fp32 "
            f"(docs/INT8.md)\n"
            f"- the first {ref['images']} test images, on the emulator (`nmc eval --data "
            f"fashion-mnist --normalize imagenet --reference classifier.pt2`); PyTorch fp32 "
            f"top-1 on them: {ref['reference_accuracy']:.1%}\n\n"
            "| program | emulator top-1 | predictions equal to PyTorch fp32's | "
            "time per image (emulator + PyTorch reference) |\n|---|---|---|---|\n" + "\n".join(lines)
            + "\n\n" + NOTES)
    print(text)
    if not args.no_write:
        replace_section(ROOT / "BENCHMARKS.md", "int8_fmnist", text)


if __name__ == "__main__":
    main()
