"""The streaming loader: a grain `MapDataset` whose element t is this host's batch of step t.

Design (and why):
- *Order is a pure function of (seed, step)* (data/order.py): which examples a host reads at a step
  come from the `Sampler`, never from the worker layout.
- *Element = one step's local batch*, not one example: grain's worker threads (`ReadOptions`) or
  processes (`mp_prefetch`) then hand out whole steps, so no step is ever split across workers and
  the stream stays exactly `step -> batch` under any worker count (grain slices a dataset across
  worker processes element by element; per-example elements would mix steps there).
- *Resolution is a function of the step too.* The element function maps the step to its bucket's
  host size (`host_sizes`), so a bucket change costs nothing: the same worker pool simply starts
  producing the next bucket's size, already prefetched when the train loop gets there.
- *The iterator state is the step.* The grain iterator's own state (`get_state()`) and the next step
  are stored in the checkpoint's metadata; on restore the saved grain state is set and the first
  element's step is checked against the train state's step, so a resumed run sees exactly the
  batches the uninterrupted one would have.
- *Host work only* (data/decode.py): decode and keep each image whole at the bucket's host size
  (data/canvas.py: sharp enough that the device's random-resized crop of the whole image upsamples
  no more than torchvision's crop of the file), padded into the bucket's canvas.
- *Bad data never stops a run:* an undecodable example is counted (decode.SKIPPED) and replaced by
  the next decodable example (index + 1, + 2, ...), so batches keep their size and stay a pure
  function of (seed, step).
"""
from __future__ import annotations

import numpy as np

from effssl_jax.data import canvas, decode, folder
from effssl_jax.data.errors import DataError
from effssl_jax.data.order import Sampler

MAX_CONSECUTIVE_BAD = 64


def host_sizes(plan, size_of) -> tuple[tuple[int, canvas.HostSize], ...]:
    """(first step, size_of(resolution)) of each resolution stage of a plan: picklable, unlike
    the plan."""
    return tuple((s.start, size_of(s.resolution)) for s in plan.stages)


def size_at(sizes: tuple[tuple[int, canvas.HostSize], ...], step: int) -> canvas.HostSize:
    """The host size of a step: that of the last stage starting at or before it."""
    size = sizes[0][1]
    for start, s in sizes:
        if step >= start:
            size = s
    return size


class HostBatch:
    """The grain map function: step -> (step, uint8 pixels [local_batch, C, C, 3], int32 sizes
    [local_batch, 2]) of whole images at the step's host size."""

    def __init__(self, source, sampler: Sampler, sizes):
        self.source, self.sampler, self.sizes = source, sampler, tuple(sizes)

    def _substitute(self, index: int, transform):
        """The first decodable example after `index`."""
        n = len(self.source)
        for k in range(1, min(MAX_CONSECUTIVE_BAD, n) + 1):
            pixels, sizes, _, ok = decode.decode_examples(self.source, [(index + k) % n],
                                                          transform)
            if ok[0]:
                return pixels[0], sizes[0]
        raise DataError(f"{MAX_CONSECUTIVE_BAD} consecutive examples from "
                        f"{self.source.name(index)} on cannot be decoded; check the data "
                        "(rebuild it with python -m effssl_jax.data.prepare)")

    def __call__(self, step):
        step = int(step)
        idx = self.sampler.indices(step)
        transform = folder.WholeImage(size_at(self.sizes, step))
        pixels, sizes, _, ok = decode.decode_examples(self.source, idx, transform)
        for j in np.flatnonzero(~ok):
            pixels[j], sizes[j] = self._substitute(int(idx[j]), transform)
        return np.int64(step), pixels, sizes


class GrainLoader:
    """Iterates (step, this host's canvas.Images) for steps start..total_steps-1 through grain.

    The grain dataset is `MapDataset.range(base, total_steps).map(HostBatch)`: `base` is the step
    the run (or the session that wrote the checkpoint) started from, and grain's iterator state
    counts from there. Restoring with the same base and worker layout sets the saved grain state;
    otherwise (an older checkpoint, another worker count) the dataset starts at the step itself.
    Either way the first element's step is checked against the train state's step.
    """

    def __init__(self, source, sampler: Sampler, sizes, total_steps: int, threads: int = 0,
                 processes: int = 0, prefetch: int = 2):
        self.source, self.sampler, self.sizes = source, sampler, tuple(sizes)
        self.total_steps = total_steps
        self.threads, self.processes = decode.default_threads(threads), processes
        self.prefetch = max(prefetch, self.threads)
        self._iter, self._base, self._expected = None, 0, 0

    def canvas(self, step: int) -> int:
        return size_at(self.sizes, step).canvas

    def _layout(self) -> dict:
        return {"threads": self.threads, "processes": self.processes}

    def _check(self, start: int, saved: dict) -> None:
        """Refuses a saved state of another data order, or not at the train state's step."""
        if saved.get("order") != self.sampler.fingerprint():
            raise DataError(f"the checkpoint's data order {saved.get('order')} differs from "
                            f"this run's {self.sampler.fingerprint()} (dataset size, batch "
                            "size or seed changed); restore them or use a new --workdir")
        if saved.get("next_step") != start:
            raise DataError(f"the checkpoint's data iterator is at step "
                            f"{saved.get('next_step')} but its train state at {start}; "
                            "the checkpoint is inconsistent, delete it")

    def _open(self, base: int):
        """A fresh grain iterator over steps base..total_steps-1."""
        import grain
        ds = grain.MapDataset.range(base, self.total_steps).map(
            HostBatch(self.source, self.sampler, self.sizes))
        it = ds.to_iter_dataset(grain.ReadOptions(num_threads=self.threads,
                                                  prefetch_buffer_size=self.prefetch))
        if self.processes:
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.processes))
        return iter(it)

    def restore(self, start: int, saved: dict | None = None) -> None:
        """Positions the iterator at step `start`, from a checkpoint's saved state when given."""
        if saved:
            self._check(start, saved)
        use_saved = bool(saved) and saved.get("grain") is not None and \
            saved.get("layout") == self._layout() and 0 <= saved.get("base", -1) <= start
        self.close()
        self._base = saved["base"] if use_saved else start
        self._iter = self._open(self._base)
        if use_saved:
            self._iter.set_state(saved["grain"])
        self._expected = start

    def state(self) -> dict:
        """What the checkpoint stores: grain's iterator state, its base step, the next step."""
        return {"next_step": self._expected, "order": self.sampler.fingerprint(),
                "base": self._base, "layout": self._layout(),
                "grain": self._iter.get_state() if self._iter is not None else None}

    def __iter__(self):
        if self._iter is None:
            self.restore(0)
        return self

    def __next__(self):
        if self._expected >= self.total_steps:
            raise StopIteration
        step, pixels, sizes = next(self._iter)
        if int(step) != self._expected:
            raise DataError(f"the data iterator produced step {int(step)} where step "
                            f"{self._expected} was due; delete the inconsistent checkpoint")
        self._expected += 1
        return int(step), canvas.Images(pixels, sizes)

    def close(self) -> None:
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()
        self._iter = None
