"""Process-group helpers for the contrastive losses.

The losses follow the "local loss" scheme: every process gathers all features
*with gradient*, scores its own n rows against all N columns and returns the
mean over its rows. Because DDP averages gradients over processes, the
effective objective is the mean of the per-process losses, which equals the
loss of one process holding the whole global batch -- with O(n*N) memory per
process instead of O(N^2).

Gradient bookkeeping (what :class:`_GatherWithGrad` guarantees): the backward
of the gather sums, over all processes, the gradients that flow into each
process's slice. So the gradient that reaches a process's own features is
``W`` times the gradient of the global loss; DDP's division by ``W`` makes the
parameter gradients exact. Features that are *not* gathered (own hard
negatives) get the same ``W`` factor automatically, since only the owning
process's loss touches them, and ``loss_r / n`` is ``W`` times ``loss / N``.

With unequal batch sizes (an epoch's short last batch, a process whose share
of it is empty) the global mean weights process r by n_r / N, so the losses
return ``sum of the local terms * W / N`` rather than the local mean: after
DDP's division by W that is exactly the global mean (tested with real
processes in tests/test_distributed_loss.py and tests/test_trainer_distributed.py).

All helpers work without an initialised process group (world size 1).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

__all__ = ["all_gather_with_grad", "gather_sizes", "get_rank", "get_world_size", "is_distributed"]


def is_distributed(group=None) -> bool:
    """True when torch.distributed is available, initialised and has more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def get_rank(group=None) -> int:
    """This process's rank in ``group``; 0 without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group)
    return 0


def get_world_size(group=None) -> int:
    """Number of processes in ``group``; 1 without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(group)
    return 1


def gather_sizes(n: int, device: torch.device, group=None) -> list[int]:
    """Every process's batch size (row count), in rank order.

    Batches may differ in size (an uneven last batch without ``drop_last``);
    gathering sizes first keeps the gather below from hanging or misaligning
    labels in that case. Costs one tiny collective and a host sync.
    """
    if not is_distributed(group):
        return [n]
    local = torch.tensor([n], dtype=torch.long, device=device)
    out = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, local, group=group)
    return [int(t) for t in torch.cat(out).tolist()]


class _GatherWithGrad(torch.autograd.Function):
    """Concatenate every process's tensor along dim 0; backward sums gradients over processes."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: tuple[int, ...], rank: int, group) -> torch.Tensor:
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group
        max_n = max(sizes)
        tensor = tensor.contiguous()
        if tensor.shape[0] < max_n:
            pad = tensor.new_zeros((max_n - tensor.shape[0], *tensor.shape[1:]))
            tensor = torch.cat([tensor, pad])
        parts = [torch.empty_like(tensor) for _ in sizes]
        dist.all_gather(parts, tensor, group=group)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        sizes, rank, group = ctx.sizes, ctx.rank, ctx.group
        offset = sum(sizes[:rank])
        # All-reduce and keep our slice. A reduce-scatter would move half the bytes, but gloo lacks it
        # and these are embeddings (N x d floats), negligible next to DDP's parameter gradients; one
        # code path on every backend is the one the CPU tests exercise.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=group)
        return grad[offset: offset + sizes[rank]], None, None, None


def all_gather_with_grad(tensor: torch.Tensor, sizes: Sequence[int] | None = None, group=None) -> torch.Tensor:
    """Concatenate ``tensor`` from all processes along dim 0, in rank order, keeping the gradient.

    ``sizes`` are the row counts of all processes (see :func:`gather_sizes`);
    ``None`` gathers them. Without a process group the tensor is returned as is.
    """
    if not is_distributed(group):
        return tensor
    if sizes is None:
        sizes = gather_sizes(tensor.shape[0], tensor.device, group)
    return _GatherWithGrad.apply(tensor, tuple(int(s) for s in sizes), dist.get_rank(group), group)
