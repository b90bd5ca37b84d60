"""Streaming training data (webdataset tars, Parquet shards, any ``datasets.IterableDataset``) that resumes exactly.

A corpus larger than the disk is read as a stream; a job that is resumed must then
continue where the stream was, not where an epoch counter thinks it was. The Trainer
re-reads a stream at each pass and, on resume, skips batches of the first pass only,
so a run resumed after its first pass over the data diverged. :class:`ResumableStream`
makes the stream one endless sequence instead:

* the shards are split across processes (``datasets.distributed.split_dataset_by_node``)
  and, within a process, across DataLoader workers (``datasets``' own shard split):
  within a pass every shard is read by exactly one worker of one process, so no row is
  read twice and none is left out;
* each worker goes round its shards pass after pass (``set_epoch(pass)``, so a shuffle
  buffer reshuffles the same way every run) and never stops: the DataLoader is never
  exhausted, its workers never restart, and batch ``b`` of a process always comes from
  worker ``b % num_workers`` (torch keeps that order);
* resuming at optimizer step ``s`` skips, in every worker, exactly the rows its batches
  among the first ``s * gradient_accumulation_steps`` held: cheap (rows are skipped
  before any image is decoded) and exact across pass boundaries.

The order of the rows is a function of the number of processes, the number of workers
and the per-device batch size: resuming with other values would continue another
stream, so :class:`~hf_hardneg.trainer.HardNegCLIPTrainer` records them in every
checkpoint (``stream_position.json``) and refuses a resume that changes them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

__all__ = ["STREAM_POSITION", "ResumableStream", "StreamPosition"]

STREAM_POSITION = "stream_position.json"


@dataclass(frozen=True)
class StreamPosition:
    """Where a run is in its stream, and what fixes the stream's order."""

    global_step: int
    num_processes: int
    num_workers: int
    per_device_batch_size: int
    gradient_accumulation_steps: int

    def save(self, folder: str | os.PathLike) -> None:
        Path(folder, STREAM_POSITION).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "StreamPosition | None":
        path = Path(folder, STREAM_POSITION)
        return cls(**json.loads(path.read_text())) if path.is_file() else None

    def check_resumable_as(self, other: "StreamPosition", checkpoint: str | os.PathLike) -> None:
        """Raise when ``other`` (this run's settings) would read another stream than the checkpoint's run."""
        fields = ("num_processes", "num_workers", "per_device_batch_size", "gradient_accumulation_steps")
        changed = [f"{f} {getattr(self, f)} -> {getattr(other, f)}" for f in fields if getattr(self, f) != getattr(other, f)]
        if changed:
            raise ValueError(
                f"--resume_from_checkpoint {checkpoint}: the streamed data's order depends on the number of processes "
                f"and DataLoader workers and on the batch, and this run changes {', '.join(changed)}; resume with the "
                "checkpoint's values (or start a new run from its weights)")


class ResumableStream(torch.utils.data.IterableDataset):
    """An endless, deterministic stream of a ``datasets.IterableDataset`` for one process (see the module docstring).

    Args:
        dataset: the whole stream (all shards).
        process_index / num_processes: this process and how many there are.
        batch_size: rows per DataLoader batch (the per-device batch).
        skip_batches: batches this process already trained on (resume); set before iterating.
    """

    def __init__(self, dataset, process_index: int = 0, num_processes: int = 1, batch_size: int = 1,
                 skip_batches: int = 0):
        from datasets.distributed import split_dataset_by_node

        self.dataset = dataset
        self.node = split_dataset_by_node(dataset, rank=process_index, world_size=num_processes) \
            if num_processes > 1 else dataset
        self.process_index, self.num_processes, self.batch_size = process_index, num_processes, batch_size
        self.skip_batches = skip_batches

    @property
    def n_shards(self) -> int:
        return self.dataset.n_shards

    def check_workers(self, num_workers: int) -> None:
        """Each worker needs a shard of its own: an idle worker would stall the endless round-robin."""
        per_process = self.n_shards // self.num_processes if self.n_shards % self.num_processes == 0 else self.n_shards
        if max(num_workers, 1) > per_process:
            raise ValueError(
                f"the stream has {self.n_shards} shard(s), {per_process} per process over {self.num_processes} "
                f"process(es), fewer than the {num_workers} DataLoader workers each process would read with; use "
                f"--dataloader_num_workers {per_process} or fewer, or split the data into more shards")

    def rows_to_skip(self, worker: int, num_workers: int) -> int:
        """Rows of ``worker``'s stream inside the first :attr:`skip_batches` batches (batch b is worker b % J's)."""
        return len(range(worker, self.skip_batches, num_workers)) * self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        skip = self.rows_to_skip(worker, num_workers)
        stream_pass = 0
        while True:
            self.node.set_epoch(stream_pass)
            rows = 0
            for row in self.node:  # inside a DataLoader worker, datasets gives this worker its own shards
                rows += 1
                if skip:
                    skip -= 1
                    continue
                yield row
            if rows == 0:
                raise ValueError(f"process {self.process_index}, DataLoader worker {worker}: its shards of the "
                                 "stream hold no rows (after any filtering); check the data and the concepts")
            stream_pass += 1
