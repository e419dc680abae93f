"""int8 vs fp32 accuracy on the digits data set, on the emulator (issue 16): trains
deit_digits briefly with PyTorch (25 epochs, AdamW, seed 0), compiles it for sta_ref and
for sta_int8 (calibrated on 32 training images), and runs the test split through both
programs (loaded once). Prints top-1 of PyTorch fp32 and of both emulated programs, and
the emulator's time per image. Run on demand (~2 min):

    .venv/bin/python bench/int8_digits_accuracy.py
"""
import tempfile
import time

import numpy as np
import torch

TMP = tempfile.mkdtemp()
torch.manual_seed(0); torch.set_num_threads(1)
from nmc.models.datasets import load_dataset
from nmc.models.registry import build_model, export_to_file
from nmc.compiler.driver import compile_model
from nmc.isa.target import load_target
from nmc.runtime.emulator import LoadedProgram
ds = load_dataset("digits", 16)
model, example = build_model("deit_digits", {}, seed=0)
tr, te = ds["train"], ds["test"]
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
model.train()
for ep in range(25):
    perm = torch.randperm(len(tr))
    for i in range(0, len(tr), 64):
        idx = perm[i:i+64]
        loss = torch.nn.functional.cross_entropy(model(tr.images[idx]), tr.labels[idx])
        opt.zero_grad(); loss.backward(); opt.step()
model.eval()
with torch.no_grad(): fp = (model(te.images).argmax(-1) == te.labels).float().mean().item()
print("fp32 pytorch top-1", fp, len(te), flush=True)
export_to_file(model, example, TMP + "/digits.pt")
calib = tr.images[:32].numpy()[:, None]  # 32 training images as calibration inputs
np.save(TMP + "/digits_calib.npy", calib)
res = {}
for tgt, q in (("sta_ref", None), ("sta_int8", {"calib": TMP + "/digits_calib.npy"})):
    prog = compile_model(TMP + "/digits.pt", tgt, quant=q)
    lp = LoadedProgram(prog, load_target(tgt)); (name,) = [s.name for s in prog.symbols if s.kind == "input"]
    t0 = time.time(); correct = 0
    for i in range(len(te)):
        out, = lp.run({name: te.images[i:i+1].numpy()}).outputs.values()
        correct += int(out.argmax() == int(te.labels[i]))
    res[tgt] = correct / len(te)
    print(tgt, "emulator top-1", res[tgt], f"{(time.time()-t0)/len(te)*1e3:.1f} ms/img", flush=True)
