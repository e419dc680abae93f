"""The `target` option shared by the passes that need the machine description."""

from functools import lru_cache

from nmc.isa.target import DEFAULT_TARGET, Target, load_target

TARGET_ATTR = "nm.target"
"""Module attribute naming the target the module was scheduled for."""

__all__ = ["DEFAULT_TARGET", "TARGET_ATTR", "cached_target"]


@lru_cache(maxsize=None)
def cached_target(name_or_path: str) -> Target:
    return load_target(name_or_path)
