"""Check that a restructuring changed no program: prog.bin byte-identical to a base commit.

    .venv/bin/python bench/check_program_identity.py                # against 747bcb1
    .venv/bin/python bench/check_program_identity.py --base HEAD~3  # against any commit
    .venv/bin/python bench/check_program_identity.py --quick        # fewer configurations

The base commit is checked out with `git worktree` into a temporary folder. Each side is
imported from its own tree: a folder of `nmc/<package>` links put first on PYTHONPATH
shadows whatever tree the virtual environment's editable install points to, so the check
also works from another git worktree. Each model is exported once, by the base, and the
same file is compiled by both trees under the same relative path (prog.bin records the model
path), with deit_tiny (the demo model: `nmc demo` exports it the same way), swin_micro and
mlp_block under dense, `--sparsity 2:4`,
`--sparsity elsa:speedup=2` and `--window-keep 0.5`. A configuration that the base refuses
must be refused by this tree too. Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "747bcb1"  # the last commit before the architecture restructuring (issue 13)
MODELS = ("deit_tiny", "swin_micro", "mlp_block")  # the demo model is deit_tiny: its own run
CONFIGS = {
    "dense": [],
    "2:4": ["--sparsity", "2:4"],
    "elsa2": ["--sparsity", "elsa:speedup=2"],
    "keep0.5": ["--window-keep", "0.5"],
}

# Runs nmc's command line from the module named first (it moved in the restructuring).
DRIVER = "import importlib, sys; sys.exit(importlib.import_module(sys.argv[1]).main(sys.argv[2:]))"


def cli_module(tree: Path) -> str:
    return "nmc.cli" if (tree / "cli" / "__init__.py").is_file() else "nmc.compiler.cli"


def shadow_path(tree: Path, where: Path) -> Path:
    """A folder holding `nmc/<pkg>` links to every package folder of `tree`."""
    pkg = where / "nmc"
    pkg.mkdir(parents=True)
    for child in tree.iterdir():
        if (child / "__init__.py").is_file() and child.name not in ("tests", "bench"):
            (pkg / child.name).symlink_to(child)
    return where


def nmc(args: list[str], cwd: Path, tree: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, "-c", DRIVER, cli_module(tree), *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=DEFAULT_BASE, help="commit to compare with")
    ap.add_argument("--quick", action="store_true", help="skip elsa (the slowest)")
    args = ap.parse_args()
    configs = {k: v for k, v in CONFIGS.items() if not (args.quick and k == "elsa2")}
    with tempfile.TemporaryDirectory(prefix="nmc-identity-") as tmp:
        tmp = Path(tmp)
        base_tree = tmp / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(base_tree), args.base], check=True)
        try:
            base_path = shadow_path(base_tree, tmp / "shadow-base")
            head_path = shadow_path(ROOT, tmp / "shadow-head")
            work = tmp / "work"
            work.mkdir()
            failures = 0
            for model in MODELS:
                label = model
                model_file = f"{label}.pt"
                r = nmc(["export", model, "-o", model_file], work, base_tree, base_path)
                if r.returncode:
                    print(f"{label}: base could not export: {r.stderr.strip()}")
                    failures += 1
                    continue
                for cfg, extra in configs.items():
                    outcome = {}
                    for side, tree, path in (("base", base_tree, base_path),
                                             ("head", ROOT, head_path)):
                        prog = work / f"{label}-{cfg}-{side}.bin"
                        r = nmc(["compile", model_file, "-o", prog.name, "-q", *extra],
                                work, tree, path)
                        outcome[side] = (digest(prog) if r.returncode == 0
                                         else f"refused ({r.stderr.strip()[:120]})")
                    same = outcome["base"] == outcome["head"]
                    failures += not same
                    mark = "same" if same else "DIFFERENT"
                    print(f"{label:10s} {cfg:8s} {mark:9s} base {outcome['base']}"
                          + ("" if same else f"  head {outcome['head']}"), flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(base_tree)], check=False)
    print("prog.bin identical for every configuration" if not failures
          else f"{failures} configuration(s) differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
