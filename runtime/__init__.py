"""nmc.runtime: the emulator (functional semantics + the timing model of `timing.py`).

    from nmc.runtime import run_program, format_report

The names below are imported lazily, so `import nmc.runtime.timing` (which the compiler
does) does not load the emulator.
"""

__all__ = ["EmulatorError", "LayerStats", "RunResult", "format_report", "run_program"]


def __getattr__(name: str):
    if name in ("EmulatorError", "LayerStats", "RunResult", "run_program"):
        from nmc.runtime import emulator

        return getattr(emulator, name)
    if name == "format_report":
        from nmc.runtime.report import format_report

        return format_report
    raise AttributeError(f"module 'nmc.runtime' has no attribute '{name}'")
