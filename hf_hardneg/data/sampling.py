"""Batches cut from the global batch, so W processes train exactly like one process holding all of it.

accelerate shards a map-style dataset by handing out whole per-process batches
round-robin and, at the end of an epoch, pads the last round with rows from the
start of the epoch (``even_batches``) so that every process steps. For a
contrastive loss that changes the result: the padded rows become extra in-batch
negatives (and extra positives) that one process at batch W*n never sees.

:class:`GlobalBatchSampler` instead walks the same index order a single process
would, cuts it into global batches of W*n rows, and gives process r the rows
``[r*n, (r+1)*n)`` of each. The last global batch of an epoch may be short, so a
process may get fewer than n rows, or none: it still yields a batch (an empty
list), and the collator turns that into a placeholder batch that the trainer
runs through the model but leaves out of the loss, so every process takes part
in every collective and the gradients are those of the one-process batch.
"""

from __future__ import annotations

import math
from typing import Iterator, Sized

from torch.utils.data import Sampler

__all__ = ["GlobalBatchSampler"]


class GlobalBatchSampler(Sampler[list[int]]):
    """This process's slice of every global batch of ``per_process_batch_size * num_processes`` rows.

    Args:
        sampler: the index order of one epoch, as one process would walk it (e.g.
            the Trainer's ``RandomSampler``; accelerate swaps it for its seedable
            variant, identical on every process).
        per_process_batch_size: n, rows per process in a full batch.
        num_processes: W.
        process_index: r, this process's rank.
        drop_last: leave out a short last global batch instead of yielding it.

    Example::

        >>> list(GlobalBatchSampler(range(10), 2, num_processes=2, process_index=1, drop_last=False))
        [[2, 3], [6, 7], []]
    """

    #: ``None`` tells accelerate's ``BatchSamplerShard`` that batch lengths vary, so that, made a
    #: pass-through, it yields every batch as it comes, the empty last one included.
    batch_size = None

    def __init__(self, sampler: Sized, per_process_batch_size: int, num_processes: int = 1, process_index: int = 0,
                 drop_last: bool = False):
        if per_process_batch_size < 1:
            raise ValueError(f"per_process_batch_size must be >= 1, got {per_process_batch_size}")
        if not 0 <= process_index < num_processes:
            raise ValueError(f"process_index must be in [0, {num_processes}), got {process_index}")
        self.sampler = sampler
        self.per_process_batch_size = per_process_batch_size
        self.num_processes = num_processes
        self.process_index = process_index
        self.drop_last = drop_last

    @property
    def global_batch_size(self) -> int:
        return self.per_process_batch_size * self.num_processes

    def _slice(self, global_batch: list[int]) -> list[int]:
        start = self.process_index * self.per_process_batch_size
        return global_batch[start: start + self.per_process_batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for index in self.sampler:
            batch.append(int(index))
            if len(batch) == self.global_batch_size:
                yield self._slice(batch)
                batch = []
        if batch and not self.drop_last:
            yield self._slice(batch)

    def __len__(self) -> int:
        rounding = math.floor if self.drop_last else math.ceil
        return rounding(len(self.sampler) / self.global_batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to the index order, so each epoch reshuffles identically on every process."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
