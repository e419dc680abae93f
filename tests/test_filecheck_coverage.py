"""Every pass that `nmc opt --list-passes` prints has an IR test in tests/filecheck/: a
.mlir file whose `// RUN:` line runs it with `nmc opt -p` and checks the output with
filecheck. lit runs those files (`make test`: `.venv/bin/lit -q tests/filecheck`); this
test only makes sure none is missing when a pass is added."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

FILECHECK = Path(__file__).parent / "filecheck"
# `// RUN: [not] nmc opt -p PIPELINE ...`, PIPELINE quoted ('a{x="1"},b') or bare (a,b)
RUN_OPT = re.compile(r"^// RUN: (?:not )?nmc opt -p (?:'([^']*)'|(\S+))", re.M)


@pytest.fixture(scope="module")
def listed_passes() -> list[str]:
    nmc = Path(sys.executable).parent / "nmc"
    out = subprocess.run([str(nmc), "opt", "--list-passes"], capture_output=True,
                         text=True, check=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert names, "nmc opt --list-passes printed no pass"
    return names


def passes_run_by_tests() -> dict[str, list[str]]:
    """{pass name: the .mlir files whose RUN lines run it}."""
    found: dict[str, list[str]] = {}
    for path in sorted(FILECHECK.glob("*.mlir")):
        for match in RUN_OPT.finditer(path.read_text()):
            pipeline = re.sub(r"\{[^}]*\}", "", match.group(1) or match.group(2))
            for name in pipeline.split(","):
                found.setdefault(name.strip(), []).append(path.name)
    return found


def test_every_listed_pass_has_a_filecheck_test(listed_passes):
    missing = [p for p in listed_passes if p not in passes_run_by_tests()]
    assert not missing, (f"passes without an IR test (a tests/filecheck/*.mlir file with "
                         f"'// RUN: nmc opt -p PASS %s | filecheck %s'): {missing}")


def test_filecheck_tests_run_only_listed_passes(listed_passes):
    unknown = sorted(set(passes_run_by_tests()) - set(listed_passes))
    assert not unknown, f"tests/filecheck runs passes nmc does not list: {unknown}"


def test_every_filecheck_file_checks_its_output():
    for path in FILECHECK.glob("*.mlir"):
        text = path.read_text()
        runs = [line for line in text.splitlines() if line.startswith("// RUN:")]
        assert runs, f"{path.name}: no RUN line"
        assert all("| filecheck %s" in run for run in runs), f"{path.name}: {runs}"
        assert re.search(r"^// [A-Z]+(-NEXT|-DAG)?: ", text, re.M), f"{path.name}: no CHECK"
