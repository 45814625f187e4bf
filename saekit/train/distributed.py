"""Data-parallel plumbing for training: the process group, the device, and the few collectives the loop needs.

Under `torchrun --nproc_per_node N` (or any initialised default process group) every rank trains the
same SAEs on its own slice of each global batch; these helpers keep the ranks identical. Every one is
a no-op in a single process, so the training loop calls them unconditionally.

    average_gradients_(sae)     after backward: mean of the ranks' gradients (one flat all_reduce)
    any_rank(fired_F)           a latent fired if it fired on any rank (dead-latent masks are OR-ed)
    average_float_buffers_(sae) after the step: floating buffers (BatchTopK's threshold) are averaged
    broadcast_module_(sae)      rank 0's parameters and buffers to every rank (initialisation, resampling)
    broadcast_floats(scales)    rank 0's numbers (the input normalisation scales) to every rank
"""

from __future__ import annotations

import itertools
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn


def world() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _world_size() -> int:
    return world()[1]


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (no-op outside torchrun)."""
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return world()


def pick_device(name: str | None) -> torch.device:
    """The named device; None: this rank's GPU (cuda:LOCAL_RANK under torchrun) when CUDA is present, else the CPU."""
    if name is not None:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def average_gradients_(module: nn.Module) -> None:
    """Replace each parameter's gradient by its mean over the ranks (one all_reduce of all of them, flattened)."""
    n = _world_size()
    if n == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= n
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def any_rank(mask: Tensor) -> Tensor:
    """The elementwise OR of a boolean mask over the ranks."""
    if _world_size() == 1:
        return mask
    m = mask.to(torch.uint8)
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    return m.bool()


def average_float_buffers_(module: nn.Module) -> None:
    """Replace each floating-point buffer by its mean over the ranks (integer buffers are left alone)."""
    n = _world_size()
    if n == 1:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= n


def broadcast_module_(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's module."""
    if _world_size() == 1:
        return
    with torch.no_grad():
        for t in itertools.chain(module.parameters(), module.buffers()):
            dist.broadcast(t.data, src=0)


def broadcast_floats(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Rank 0's values for the same keys, on every rank (sent as one float64 tensor)."""
    if _world_size() == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return dict(zip(keys, t.tolist()))


def sum_over_ranks_(t: Tensor) -> Tensor:
    """Sum a tensor over the ranks, in place; returns it."""
    if _world_size() > 1:
        dist.all_reduce(t)
    return t


def mean_over_ranks_(t: Tensor) -> Tensor:
    """Average a floating tensor over the ranks, in place; returns it."""
    n = _world_size()
    if n > 1:
        dist.all_reduce(t)
        t /= n
    return t


def barrier() -> None:
    """Wait until every rank gets here (after rank 0 writes a checkpoint)."""
    if _world_size() > 1:
        dist.barrier()
