"""The streaming input pipeline: a grain `MapDataset` whose element t is this host's batch of step t.

Design (and why):
- *Order is a pure function of (seed, step).* `Sampler` draws a fresh global permutation per epoch
  (pipeline.batch_indices); host p of P takes the p-th contiguous slice of every global batch. This
  is a global shuffle, the hosts' shards are disjoint and together cover each epoch, and a batch
  does not depend on how many threads or processes decoded it.
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
- *Host work only:* read, decode (libjpeg draft mode for big JPEGs), convert any mode to RGB,
  resize the shorter side to the bucket's host size (resolution x margin, so the device's
  random-resized crop has pixels to spare) and crop a square at a random offset along the longer
  side. Every augmentation happens on the device.
- *Bad data never stops a run:* an undecodable example is logged once with its name, counted in
  `SKIPPED`, and replaced by the next decodable example (index + 1, + 2, ...), so batches keep their
  size and stay a pure function of (seed, step).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading

import numpy as np

from effssl_jax.data import folder, pipeline
from effssl_jax.data.errors import DataError

log = logging.getLogger(__name__)

SKIPPED: dict[str, None] = {}  # names of the undecodable examples this process has met
_SKIPPED_LOCK = threading.Lock()
MAX_CONSECUTIVE_BAD = 64


def report_bad(name: str) -> None:
    """Counts an undecodable example and logs it the first time it is met."""
    with _SKIPPED_LOCK:
        if name in SKIPPED:
            return
        SKIPPED[name] = None
    log.warning("skipped undecodable image %s", name)


def host_size(resolution: int, margin: float, fixed: int = 0) -> int:
    """Host image side for a training resolution: `fixed` if set, else resolution x margin rounded
    to a multiple of 8 (224 -> 256 with the default margin 8/7), never below the resolution."""
    if fixed:
        return fixed
    return max(resolution, 8 * round(resolution * margin / 8))


def host_sizes(plan, margin: float, fixed: int = 0) -> tuple[tuple[int, int], ...]:
    """(first step, host size) of each resolution stage of a plan: picklable, unlike the plan."""
    return tuple((s.start, host_size(s.resolution, margin, fixed)) for s in plan.stages)


def size_at(sizes: tuple[tuple[int, int], ...], step: int) -> int:
    size = sizes[0][1]
    for start, s in sizes:
        if step >= start:
            size = s
    return size


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Which examples host `process_index` of `process_count` reads at a step, and where it crops."""
    num_examples: int
    batch_size: int  # global
    seed: int
    process_index: int = 0
    process_count: int = 1

    @property
    def local_batch(self) -> int:
        return self.batch_size // self.process_count

    def _local(self, x: np.ndarray) -> np.ndarray:
        n = self.local_batch
        return x[self.process_index * n:(self.process_index + 1) * n]

    def indices(self, step: int) -> np.ndarray:
        return self._local(pipeline.batch_indices(step, self.num_examples, self.batch_size,
                                                  self.seed))

    def offsets(self, step: int) -> np.ndarray:
        """Crop offsets along the longer side, drawn per global batch position (so independent of
        the process count)."""
        return self._local(np.random.default_rng([self.seed, 1, step]).random(self.batch_size))

    def fingerprint(self) -> dict:
        return {"num_examples": self.num_examples, "batch_size": self.batch_size,
                "seed": self.seed}


def decode_examples(source, indices, size: int, offsets=None):
    """(images uint8 [n, size, size, 3], labels int32 [n], ok bool [n]); failed slots are zero."""
    n = len(indices)
    images = np.zeros((n, size, size, 3), np.uint8)
    labels = np.full(n, -1, np.int32)
    ok = np.zeros(n, bool)
    for j, (data, label) in enumerate(source.read(indices)):
        labels[j] = label
        img = folder.decode_image(data, size, 0.5 if offsets is None else float(offsets[j]))
        if img is None:
            report_bad(source.name(int(indices[j])))
        else:
            images[j], ok[j] = img, True
    return images, labels, ok


class HostBatch:
    """The grain map function: step -> (step, uint8 [local_batch, S, S, 3]) at the step's size."""

    def __init__(self, source, sampler: Sampler, sizes, random_crop: bool = True):
        self.source, self.sampler, self.sizes = source, sampler, tuple(sizes)
        self.random_crop = random_crop

    def _substitute(self, index: int, size: int, offset: float) -> np.ndarray:
        n = len(self.source)
        for k in range(1, min(MAX_CONSECUTIVE_BAD, n) + 1):
            images, _, ok = decode_examples(self.source, [(index + k) % n], size, [offset])
            if ok[0]:
                return images[0]
        raise DataError(f"{MAX_CONSECUTIVE_BAD} consecutive examples from "
                        f"{self.source.name(index)} on cannot be decoded; check the data "
                        "(rebuild it with python -m effssl_jax.data.prepare)")

    def __call__(self, step):
        step = int(step)
        idx = self.sampler.indices(step)
        offsets = self.sampler.offsets(step) if self.random_crop else np.full(len(idx), 0.5)
        size = size_at(self.sizes, step)
        images, _, ok = decode_examples(self.source, idx, size, offsets)
        for j in np.flatnonzero(~ok):
            images[j] = self._substitute(int(idx[j]), size, float(offsets[j]))
        return np.int64(step), images


def default_threads(threads: int) -> int:
    return threads or max(1, min(16, os.cpu_count() or 1))


class GrainLoader:
    """Iterates (step, local uint8 batch) for steps start..total_steps-1 through grain.

    The grain dataset is `MapDataset.range(base, total_steps).map(HostBatch)`: `base` is the step
    the run (or the session that wrote the checkpoint) started from, and grain's iterator state
    counts from there. Restoring with the same base and worker layout sets the saved grain state;
    otherwise (an older checkpoint, another worker count) the dataset starts at the step itself.
    Either way the first element's step is checked against the train state's step.
    """

    def __init__(self, source, sampler: Sampler, sizes, total_steps: int, threads: int = 0,
                 processes: int = 0, prefetch: int = 2, random_crop: bool = True):
        self.source, self.sampler, self.sizes = source, sampler, tuple(sizes)
        self.total_steps, self.random_crop = total_steps, random_crop
        self.threads, self.processes = default_threads(threads), processes
        self.prefetch = max(prefetch, self.threads)
        self._iter, self._base, self._expected = None, 0, 0

    def host_size(self, step: int) -> int:
        return size_at(self.sizes, step)

    def _layout(self) -> dict:
        return {"threads": self.threads, "processes": self.processes}

    def restore(self, start: int, saved: dict | None = None) -> None:
        """Positions the iterator at step `start`, from a checkpoint's saved state when given."""
        import grain
        if saved:
            if saved.get("order") != self.sampler.fingerprint():
                raise DataError(f"the checkpoint's data order {saved.get('order')} differs from "
                                f"this run's {self.sampler.fingerprint()} (dataset size, batch "
                                "size or seed changed); restore them or use a new --workdir")
            if saved.get("next_step") != start:
                raise DataError(f"the checkpoint's data iterator is at step "
                                f"{saved.get('next_step')} but its train state at {start}; "
                                "the checkpoint is inconsistent, delete it")
        use_saved = bool(saved) and saved.get("grain") is not None and \
            saved.get("layout") == self._layout() and 0 <= saved.get("base", -1) <= start
        self.close()
        self._base = saved["base"] if use_saved else start
        ds = grain.MapDataset.range(self._base, self.total_steps).map(
            HostBatch(self.source, self.sampler, self.sizes, self.random_crop))
        it = ds.to_iter_dataset(grain.ReadOptions(num_threads=self.threads,
                                                  prefetch_buffer_size=self.prefetch))
        if self.processes:
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.processes))
        self._iter = iter(it)
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
        step, images = next(self._iter)
        if int(step) != self._expected:
            raise DataError(f"the data iterator produced step {int(step)} where step "
                            f"{self._expected} was due; delete the inconsistent checkpoint")
        self._expected += 1
        return int(step), images

    def close(self) -> None:
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()
        self._iter = None


class MemoryLoader:
    """Batches of an in-memory ArrayDataset (synthetic, quickstart) through a background thread."""

    def __init__(self, dataset: pipeline.ArrayDataset, sampler: Sampler, total_steps: int,
                 prefetch: int = 2):
        self.dataset, self.sampler, self.total_steps = dataset, sampler, total_steps
        self.prefetch = prefetch
        self._prefetcher = None
        self._next = 0

    def host_size(self, step: int) -> int:
        return self.dataset.images.shape[1]

    def restore(self, start: int, saved: dict | None = None) -> None:
        if saved and saved.get("order") not in (None, self.sampler.fingerprint()):
            raise DataError(f"the checkpoint's data order {saved.get('order')} differs from "
                            f"this run's {self.sampler.fingerprint()}; restore the dataset size, "
                            "batch size and seed or use a new --workdir")
        s = self.sampler
        produce = lambda step: pipeline.local_batch(self.dataset, step, s.batch_size, s.seed,
                                                    s.process_index, s.process_count)
        self._prefetcher = pipeline.Prefetcher(produce, start, self.total_steps, self.prefetch)
        self._next = start

    def state(self) -> dict:
        return {"next_step": self._next, "order": self.sampler.fingerprint()}

    def __iter__(self):
        if self._prefetcher is None:
            self.restore(0)
        return self

    def __next__(self):
        step, images = next(self._prefetcher)
        self._next = step + 1
        return step, images

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()


def load_arrays(source, size: int, threads: int = 0, chunk: int = 64, progress: bool = False,
                desc: str = ""):
    """Decodes a whole source into memory at `size` (centre crops) with grain worker threads.
    Returns (images, labels, skipped names); undecodable examples are left out."""
    import grain
    n = len(source)
    chunks = grain.MapDataset.range(-(-n // chunk)).map(
        lambda c: decode_examples(source, np.arange(c * chunk, min((c + 1) * chunk, n)), size))
    threads = default_threads(threads)
    it = chunks.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                  prefetch_buffer_size=2 * threads))
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, total=-(-n // chunk), desc=f"decoding {desc}", unit="chunk")
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int32)
    ok = np.empty(n, bool)
    for c, (im, lb, good) in enumerate(it):
        images[c * chunk:c * chunk + len(im)] = im
        labels[c * chunk:c * chunk + len(im)] = lb
        ok[c * chunk:c * chunk + len(im)] = good
    skipped = [source.name(i) for i in np.flatnonzero(~ok)]
    if not ok.any():
        raise DataError(f"none of the {n} images of {desc or 'the dataset'} could be decoded "
                        f"(e.g. {skipped[0]!r}); check that they are valid image files")
    if skipped:
        images, labels = images[ok], labels[ok]
    return images, labels, skipped
