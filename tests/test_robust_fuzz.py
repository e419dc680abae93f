"""Fuzzing prog.bin: whatever bytes `nmc run` is handed, reading and running them ends in a
result or an NmcError, never another exception or an endless run (issue 4, class "fuzz").

The generator is bench/fuzz_programs.py (which runs it for 100,000+ cases outside pytest):
valid programs mutated at the byte level (bit flips, truncation, appended or overwritten
bytes, header fields) and at the section level with the table and CRCs fixed up so the
inner checks are reached (section swaps, drops, duplicates, flips inside a body, garbled
JSON and constant records, random or random-but-encodable instruction words), and streams
of random encodable instructions (random fields and masks, with or without halt). Each case
is read, disassembled and assembled back, and run on a small target (64 Ki-word DRAM) with
an instruction budget. Hypothesis drives the generator's random choices (`st.randoms`), so
a failure shrinks; `derandomize=True` makes every CI run test the same 2,100 cases.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robust_helpers import run_nmc

_PATH = Path(__file__).resolve().parents[1] / "bench" / "fuzz_programs.py"
_spec = importlib.util.spec_from_file_location("fuzz_programs", _PATH)
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_programs"] = fuzz
_spec.loader.exec_module(fuzz)

MUTATED_CASES = 1300
STREAM_CASES = 800

_SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=MUTATED_CASES, **_SETTINGS)
@given(rng=st.randoms(use_true_random=False))
def test_mutated_programs_never_crash(rng):
    fuzz.check_case(rng, fuzz.mutated_case)


@settings(max_examples=STREAM_CASES, **_SETTINGS)
@given(rng=st.randoms(use_true_random=False))
def test_random_instruction_streams_never_crash(rng):
    fuzz.check_case(rng, fuzz.random_stream_case)


def test_the_generator_reaches_every_outcome():
    """The cases are not all rejected at the door: some run, some fail inside the emulator."""
    outcomes = {fuzz.check_case(random.Random(f"outcomes:{i}"))[1].split(":")[0]
                for i in range(300)}
    assert outcomes == {"ok", "reject", "error"}


def test_valid_programs_run(tmp_path):
    for i in range(20):
        rng = random.Random(f"valid:{i}")
        data = fuzz.program_to_bytes(fuzz.valid_program(rng))
        assert fuzz.run_case(data, rng) == "ok"


def test_bench_counts_and_reports(capsys):
    assert fuzz.main(["-n", "60", "--seed", "3", "--chunk", "30"]) == 0
    out = capsys.readouterr().out
    assert "fuzz_programs: 60 cases, seed 3" in out
    assert "failures (not a RunResult and not an NmcError): 0" in out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_console_script_on_fuzzed_files(tmp_path, seed):
    """A few fuzzed files through the real `nmc run` and `nmc disasm`: exit 0 or 1, one
    line on error, never a traceback."""
    rng = random.Random(f"cli:{seed}")
    name, data = fuzz.mutated_case(rng)
    path = tmp_path / "fuzz.bin"
    path.write_bytes(data)
    for argv in (["run", path], ["disasm", path, "-o", tmp_path / "fuzz.s"]):
        proc = run_nmc(*argv)
        assert proc.returncode in (0, 1), (name, proc.stderr)
        assert "Traceback" not in proc.stderr
        if proc.returncode:
            assert proc.stderr.startswith("nmc: error: ") and proc.stderr.count("\n") == 1
