"""What a run writes for people: metrics.jsonl, a progress bar and summary.json."""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time

import jax

from tqdm.auto import tqdm


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends one JSON object per line to WORKDIR/metrics.jsonl. On resume from step s, lines of
    later steps (written after the checkpoint by a run that died) are dropped first, so the file
    reads as one uninterrupted run."""

    def __init__(self, workdir: str, resume_step: int = 0):
        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):
            kept = [line for line in open(self.path)
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(kept)
        self._file = open(self.path, "a")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({k: _jsonable(v) for k, v in obj.items()}, f, indent=2)
    os.replace(tmp, path)


def progress_bar(total: int, initial: int, enabled: bool):
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step",
                dynamic_ncols=True, file=sys.stderr, smoothing=0.1)


def read_summary(workdir: str) -> dict:
    path = os.path.join(workdir, "summary.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found; --config.compare_to must name the workdir of "
                                "a finished run")
    with open(path) as f:
        return json.load(f)


class PendingMetrics:
    """Metrics of recent steps kept on the device and fetched together, so the host never blocks
    on a step it has just dispatched. images_per_sec covers the time since the last fetch, less
    the time spent inside `paused()` (compiling, evaluating, checkpointing)."""

    def __init__(self):
        self._items: list = []
        self._images = 0
        self._since = time.perf_counter()
        self._paused_s = 0.0

    def add(self, record: dict, device_metrics, images: int) -> None:
        self._items.append((record, device_metrics))
        self._images += images

    @contextlib.contextmanager
    def paused(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:  # only the part after the last fetch counts against the next rate
            self._paused_s += time.perf_counter() - max(t0, self._since)

    def fetch(self) -> list[dict]:
        if not self._items:
            return []
        values = jax.device_get([m for _, m in self._items])
        now = time.perf_counter()
        rate = self._images / max(now - self._since - self._paused_s, 1e-9)
        out = [{**record, "images_per_sec": rate, **{k: float(v) for k, v in m.items()}}
               for (record, _), m in zip(self._items, values)]
        self._items, self._images, self._since, self._paused_s = [], 0, now, 0.0
        return out


class Stopwatch:
    """Accumulates wall-clock time into a checkpointed dict, across resumes: wall_clock_s in
    total and, under `excluded(key)`, the parts that are not training steps."""

    KEYS = ("wall_clock_s", "compile_s", "eval_s", "checkpoint_s")

    def __init__(self, meta: dict):
        self.meta = meta
        for key in self.KEYS:
            meta.setdefault(key, 0.0)
        self._last = time.perf_counter()

    def update(self) -> None:
        now = time.perf_counter()
        self.meta["wall_clock_s"] += now - self._last
        self._last = now

    @contextlib.contextmanager
    def excluded(self, key: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.meta[key] += time.perf_counter() - t0
