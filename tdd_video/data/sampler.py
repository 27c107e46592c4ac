"""Seeded, sharded, bucket-aware batch sampling with a resumable position.

Order of one epoch (identical on every rank, computed from ``seed`` and ``epoch`` only):

1. a permutation of all sample indices (training; evaluation keeps file order);
2. grouped into batches of one bucket each (`transforms.bucket_batches`);
3. the batch list cut to a multiple of ``world_size`` (so ranks stay in lock step) and dealt
   round-robin: rank r gets batches r, r + W, r + 2W, ... — disjoint across ranks;
4. inside a rank, torch's DataLoader deals batches round-robin to its workers — disjoint across
   workers. Samples never depend on which worker loads them (each sample draws its randomness from
   ``(seed, epoch, index)``), so resuming at a batch offset reproduces the stream exactly.

Items are `SampleKey(index, epoch)` so the dataset knows the epoch even in persistent workers.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import torch

from tdd_video.data.transforms import bucket_batches


class SampleKey(NamedTuple):
    index: int
    epoch: int


class ShardedBatchSampler:
    """Batch sampler for one rank: yields lists of SampleKey; see the module docstring."""

    def __init__(self, num_samples: int, batch_size: int, bucket_of: Sequence[int] | None = None,
                 rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if num_samples <= 0:
            raise ValueError("no samples to draw from")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.bucket_of = list(bucket_of) if bucket_of is not None else [0] * num_samples
        if len(self.bucket_of) != num_samples:
            raise ValueError("bucket_of must have one entry per sample")
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch, self.start_batch = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches (sample indices) of ``epoch``."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        if self.shuffle:
            g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(epoch))
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        batches = bucket_batches(self.bucket_of, order, self.batch_size, self.drop_last)
        if self.drop_last:
            batches = batches[: len(batches) // self.world_size * self.world_size]
        mine = batches[self.rank::self.world_size]
        self._cache = (epoch, mine)
        return mine

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """Next iteration starts at batch ``start_batch`` of ``epoch`` (for exact resume)."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        epoch = self.epoch
        for batch in self.rank_batches(epoch)[self.start_batch:]:
            yield [SampleKey(i, epoch) for i in batch]

    def __len__(self) -> int:
        return max(0, len(self.rank_batches(self.epoch)) - self.start_batch)

    def batches_per_epoch(self) -> int:
        return len(self.rank_batches(self.epoch))


STATS_KEY = "_data_stats"


class StatsCollate:
    """Wraps a collate function; adds the worker's cumulative failure counts of the dataset (if it keeps
    `stats`, a data.dataset.FailureStats) to each batch, so the main process can sum over workers."""

    def __init__(self, collate_fn, dataset):
        self.collate_fn, self.dataset = collate_fn, dataset

    def __call__(self, items):
        from torch.utils.data import get_worker_info
        batch = self.collate_fn(items)
        stats = getattr(self.dataset, "stats", None)
        if stats is not None and isinstance(batch, dict):
            info = get_worker_info()
            batch[STATS_KEY] = {"worker": info.id if info is not None else -1, "attempts": stats.attempts,
                                "skipped": stats.failed,
                                **{f"skipped_{kind}": n for kind, n in stats.failures.items()}}
        return batch


class VideoLoader:
    """A DataLoader over a ShardedBatchSampler that tracks its position for exact resume.

    Iterating yields one epoch from the current position, then advances to the next epoch.
    ``state_dict()`` = {epoch, batches_consumed, samples_consumed, seed, rank, world_size, data_stats}
    (JSON-serialisable);
    restore with ``load_state_dict`` and the next batch is the one an uninterrupted run would get.
    """

    def __init__(self, dataset, sampler: ShardedBatchSampler, collate_fn, num_workers: int = 0,
                 prefetch_factor: int = 2, epoch: int = 0):
        from torch.utils.data import DataLoader

        self.dataset, self.sampler = dataset, sampler
        self.epoch, self.batches_consumed = int(epoch), 0
        self._worker_stats: dict[int, dict] = {}
        self._base_stats: dict[str, int] = {}          # counts restored from a checkpoint (earlier processes)
        extra = dict(persistent_workers=True, prefetch_factor=prefetch_factor) if num_workers > 0 else {}
        self.loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=StatsCollate(collate_fn, dataset),
                                 num_workers=num_workers, **extra)

    def __iter__(self):
        self.sampler.set_position(self.epoch, self.batches_consumed)
        for batch in self.loader:
            self.batches_consumed += 1
            stats = batch.pop(STATS_KEY, None)
            if stats is not None:
                self._worker_stats[stats.pop("worker")] = stats
            yield batch
        self.epoch += 1
        self.batches_consumed = 0

    def data_stats(self) -> dict[str, int]:
        """Samples attempted and skipped (by reason) so far, summed over this rank's worker processes
        (each worker counts its own; the counts ride along with its batches), plus the counts of the run
        before a resume (restored by `load_state_dict`)."""
        total: dict[str, int] = {"attempts": 0, "skipped": 0}
        for stats in [self._base_stats, *self._worker_stats.values()]:
            for k, v in stats.items():
                total[k] = total.get(k, 0) + int(v)
        return total

    def infinite(self):
        """Batches forever, epoch after epoch (each epoch reshuffled from its seed)."""
        while True:
            empty = True
            for batch in self:
                empty = False
                yield batch
            if empty:
                raise RuntimeError("data loader produced no batch in a whole epoch "
                                   "(fewer samples than batch_size × world_size?)")

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return len(self.sampler.rank_batches(self.epoch))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_consumed": self.batches_consumed,
                "samples_consumed": self.batches_consumed * self.sampler.batch_size,
                "seed": self.sampler.seed, "rank": self.sampler.rank,
                "world_size": self.sampler.world_size, "data_stats": self.data_stats()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.sampler.seed) != self.sampler.seed:
            raise ValueError(f"loader state was saved with seed {state['seed']}, this loader uses "
                             f"{self.sampler.seed}; exact resume needs the same seed")
        if state.get("world_size", self.sampler.world_size) != self.sampler.world_size:
            raise ValueError(f"loader state was saved with world_size {state['world_size']}, now "
                             f"{self.sampler.world_size}; the data order would differ")
        self.epoch, self.batches_consumed = int(state["epoch"]), int(state["batches_consumed"])
        self._base_stats = {k: int(v) for k, v in state.get("data_stats", {}).items()}
        self._worker_stats = {}
