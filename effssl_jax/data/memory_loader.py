"""The in-memory loader: batches of a split already decoded into host memory (synthetic,
quickstart, `--config.data.loader=memory`), gathered on a background thread ahead of the train
step. Same order (data/order.py) and same interface as the streaming grain loader; its iterator
state is the next step alone.
"""
from __future__ import annotations

import queue
import threading

from effssl_jax.data.canvas import Images
from effssl_jax.data.errors import DataError
from effssl_jax.data.order import Sampler


class Prefetcher:
    """Runs `produce(step)` for steps start..end-1 on a background thread, `depth` ahead.
    Iterating yields (step, item); an exception in `produce` is raised in the consumer."""

    _END = object()

    def __init__(self, produce, start: int, end: int, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(produce, start, end), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, produce, start, end):
        try:
            for step in range(start, end):
                if not self._put((step, produce(step))):
                    return
            self._put(self._END)
        except Exception as e:  # noqa: BLE001 - handed to the consumer
            self._put(e)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        self._stop.set()


class MemoryLoader:
    """Iterates (step, this host's canvas.Images) for steps start..total_steps-1 of `images`
    (all of a split's, e.g. an ArrayDataset's), `prefetch` steps ahead."""

    def __init__(self, images: Images, sampler: Sampler, total_steps: int, prefetch: int = 2):
        self.images, self.sampler, self.total_steps = images, sampler, total_steps
        self.prefetch = prefetch
        self._prefetcher = None
        self._next = 0

    def canvas(self, step: int) -> int:
        return self.images.canvas

    def _batch(self, step: int) -> Images:
        return self.images[self.sampler.indices(step)]

    def restore(self, start: int, saved: dict | None = None) -> None:
        """Positions the iterator at step `start`; a saved state only has its order checked."""
        if saved and saved.get("order") not in (None, self.sampler.fingerprint()):
            raise DataError(f"the checkpoint's data order {saved.get('order')} differs from "
                            f"this run's {self.sampler.fingerprint()}; restore the dataset size, "
                            "batch size and seed or use a new --workdir")
        self._prefetcher = Prefetcher(self._batch, start, self.total_steps, self.prefetch)
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
