# lit configuration of the IR tests: every .mlir file here runs its `// RUN:` lines, e.g.
#   // RUN: nmc opt -p fuse-activations %s | filecheck %s
# `make test` runs them with `.venv/bin/lit -q tests/filecheck` (or `lit -v` for details).
import os
import sys

import lit.formats

config.name = "nmc-filecheck"
config.test_format = lit.formats.ShTest()
config.suffixes = [".mlir"]
config.test_source_root = os.path.dirname(__file__)
config.excludes = ["lit.cfg.py"]

# `nmc` and `filecheck` come from the virtual environment lit itself runs in (its
# `bin/`), so the tests run the checkout's nmc, not whatever else is on PATH.
venv_bin = os.path.dirname(sys.executable)
config.environment["PATH"] = os.pathsep.join([venv_bin, os.environ.get("PATH", "")])
# one torch thread per nmc process: lit runs the files in parallel
config.environment["OMP_NUM_THREADS"] = "1"
