"""The data order: which examples each host reads at each step, as a pure function of (seed, step).

Step t reads batch t mod steps_per_epoch of a fresh global permutation of epoch
t // steps_per_epoch (the last incomplete batch of an epoch is dropped). Host p of P takes the p-th
contiguous slice of every global batch, so the hosts' shards are disjoint, together cover each
epoch, and a batch does not depend on how many threads or processes decoded it. A resumed run
therefore sees exactly the examples the uninterrupted one would have seen: the step is the
iterator state. Both loaders (grain_loader.py, memory_loader.py) read their batches from here.
"""
from __future__ import annotations

import dataclasses

import numpy as np


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int) -> np.ndarray:
    """Global example indices of a step's batch (a fresh permutation every epoch; the last
    incomplete batch of an epoch is dropped)."""
    steps_per_epoch = num_examples // batch_size
    epoch, position = divmod(step, steps_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[position * batch_size:(position + 1) * batch_size]


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Which examples host `process_index` of `process_count` reads at a step."""
    num_examples: int
    batch_size: int  # global
    seed: int
    process_index: int = 0
    process_count: int = 1

    @property
    def local_batch(self) -> int:
        return self.batch_size // self.process_count

    def host_slice(self, x: np.ndarray) -> np.ndarray:
        """This host's share of a global batch: a contiguous slice, disjoint across hosts."""
        n = self.local_batch
        return x[self.process_index * n:(self.process_index + 1) * n]

    def indices(self, step: int) -> np.ndarray:
        return self.host_slice(batch_indices(step, self.num_examples, self.batch_size, self.seed))

    def fingerprint(self) -> dict:
        """What a checkpoint's data order must match: the inputs of `batch_indices`."""
        return {"num_examples": self.num_examples, "batch_size": self.batch_size,
                "seed": self.seed}
