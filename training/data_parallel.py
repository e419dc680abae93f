"""Data-parallel training for `nmc sparsify --nproc N` (docs/SCALE_OUT.md), rank side.

Under torchrun (`nmc.training.torchrun` launches it) every rank runs the whole of `nmc
sparsify` on the same data with the same seeds; torch.distributed (gloo, CPU) makes them
one training:
- every training batch (the same indices on every rank: the data order comes from the
  seed) is cut into `shard`s, contiguous and one per rank; each rank runs its shard
  forward and backward with the loss summed over its images and divided by the whole
  batch's size, and `sync_gradients` sums the gradients over the ranks (one coalesced
  all-reduce): every rank then holds the gradient of the whole batch's mean loss and takes
  the same optimiser step. This is what DistributedDataParallel does; it is done by hand
  because the supernets run the model through `torch.func.functional_call` with masked
  weights, which DDP's wrapper does not see;
- `gather_rows` gives every rank the whole batch's logits, so the supernets' running
  statistics (ELSA's per-choice accuracy) are the same on every rank;
- `sum_over_ranks` adds up the evaluations (each rank scores a contiguous part of a split),
  so every search sees the same numbers on every rank and makes the same choices.
Only rank 0 writes files and prints. The result for a given N is deterministic; it is not
bit-identical to N=1 (the gradient is summed in another order).

Outside torchrun nothing here is active (`size()` is 1) and training runs as before.
"""

from __future__ import annotations

import datetime
import os
import sys
from typing import Iterable, NoReturn

import torch
import torch.distributed as dist

from nmc.training.errors import SparsifyError

ERRORS_ENV = "NMC_RANK_ERRORS"
"""The folder where each rank writes its error line (set by the launcher)."""


STORE_TIMEOUT = datetime.timedelta(minutes=10)
"""How long a rank waits for the others to join (torch's default for gloo groups)."""


class PeerFailed(SparsifyError):
    """A collective failed because another rank died: that rank's error is the one to
    report, not this one."""


def under_torchrun() -> bool:
    """Whether this process is a rank started by torchrun (or elastic_launch)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ


def size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if size() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def join() -> None:
    """Join the process group torchrun's environment describes (gloo: CPU tensors). Ranks
    other than 0 send their stdout and stderr to the null device: rank 0 speaks for all.

    The group's keys go under a prefix of the restart count: torch 2.13's agent keeps its
    store across an elastic restart, and a restarted rank 0 read the dead rank 1's address
    from the previous attempt's keys ("Gloo connectFullMesh failed ... Connection refused").
    """
    env = os.environ
    rank_, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    agent_store = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), world,
                          is_master=not agent_store and rank_ == 0, multi_tenant=True,
                          timeout=STORE_TIMEOUT)
    attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group("gloo", store=dist.PrefixStore(f"nmc/attempt_{attempt}", store),
                            rank=rank_, world_size=world)
    if dist.get_rank() != 0:
        sys.stdout.flush()
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)


def leave(status: int, error: str | None = None) -> NoReturn:
    """End this rank: record `error` (one line) for the launcher, leave the process group
    and exit with `status` at once. `os._exit`: torch 2.13's gloo sometimes aborts at
    interpreter exit after a correct run (shared/DESIGN.md), which would turn success into
    SIGABRT."""
    folder = os.environ.get(ERRORS_ENV)
    if error is not None and folder:
        try:
            with open(os.path.join(folder, f"rank{rank()}.txt"), "w") as f:
                f.write(error + "\n")
        except OSError:
            pass
    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def threads(serial: int) -> int:
    """torch threads per rank: the serial count shared by the ranks on this machine (so N
    ranks on N cores do not oversubscribe them); fixed for a given N, like the result."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if size() > 1 else 1
    return max(1, serial // local)


def shard(count: int) -> slice:
    """This rank's contiguous part of `count` items (rank r: [r*count//N, (r+1)*count//N))."""
    n, r = size(), rank()
    return slice(r * count // n, (r + 1) * count // n)


def _collective(op, *args) -> None:
    try:
        op(*args)
    except RuntimeError as e:  # gloo: "Connection closed by peer" and the like
        raise PeerFailed(f"another training process failed ({e})") from None


def sync_gradients(parameters: Iterable[torch.nn.Parameter], loss: torch.Tensor) -> float:
    """Sum the gradients of `parameters` over the ranks, in place, and return the sum of
    `loss` over the ranks. A parameter with no gradient on some rank (an empty shard)
    takes zeros there; one with none on every rank keeps None, as in a serial step."""
    params = [p for p in parameters if p.requires_grad]
    flags = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
    _collective(dist.all_reduce, flags)
    used = [p for p, f in zip(params, flags.tolist()) if f]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in used]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).float()])
    _collective(dist.all_reduce, flat)
    offset = 0
    for p, g in zip(used, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
        offset += g.numel()
    return float(flat[-1])


def gather_rows(rows: torch.Tensor, count: int) -> torch.Tensor:
    """The whole batch's `rows` ([count, ...] over the ranks' shards, in rank order)."""
    n = size()
    biggest = max(((r + 1) * count // n) - (r * count // n) for r in range(n))
    padded = torch.zeros((biggest, *rows.shape[1:]), dtype=rows.dtype)
    padded[:len(rows)] = rows
    parts = [torch.empty_like(padded) for _ in range(n)]
    _collective(dist.all_gather, parts, padded)
    return torch.cat([part[:((r + 1) * count // n) - (r * count // n)]
                      for r, part in enumerate(parts)])


def sum_over_ranks(values: list[float]) -> list[float]:
    """`values` added up over the ranks (float64; every rank gets the same sums)."""
    t = torch.tensor(values, dtype=torch.float64)
    _collective(dist.all_reduce, t)
    return t.tolist()


def barrier() -> None:
    _collective(dist.barrier)
