"""`torch_threads(n)`: torch on n threads inside a block, the previous count restored after.

The one helper for every place that pins torch's thread count: the emulator (one thread
while instructions run), the compile-time sensitivity measurement (the cores not already
busy), and `nmc sparsify` (a fixed count, so training is reproducible). torch is imported
when the block is entered, so importing this module costs nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
