"""What a run writes for people: metrics.jsonl (and the viewers: TensorBoard, W&B), a progress bar,
phase lines and summary.json."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time

import jax
from tqdm.auto import tqdm

from effssl_jax import viewers
from effssl_jax.errors import ConfigError


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends one JSON object per line to WORKDIR/metrics.jsonl. On resume from step s, lines of
    later steps (written after the checkpoint by a run that died) are dropped first, so the file
    reads as one uninterrupted run; a run starting from step 0 starts the file afresh."""

    def __init__(self, workdir: str, resume_step: int = 0):
        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):
            kept = [line.rstrip("\n") + "\n" for line, record in self._records(self.path)
                    if resume_step and record.get("step", 0) <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(kept)
        self._file = open(self.path, "a")

    @staticmethod
    def _records(path: str) -> list[tuple[str, dict]]:
        """The file's (line, record) pairs; a last line that is not JSON (the run died while
        writing it) is dropped with a warning."""
        with open(path) as f:
            lines = [line for line in f if line.strip()]
        records = []
        for i, line in enumerate(lines):
            try:
                records.append((line, json.loads(line)))
            except json.JSONDecodeError:
                if i < len(lines) - 1:
                    raise
                logging.warning("%s: dropping its last line, cut short (the run died while "
                                "writing it): %r", path, line[:80])
        return records

    def write(self, record: dict) -> None:
        self._file.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of WORKDIR/metrics.jsonl (a last line cut short is dropped, as on resume)."""
    return [record for _, record in MetricsLog._records(os.path.join(workdir, "metrics.jsonl"))]


def write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({k: _jsonable(v) for k, v in obj.items()}, f, indent=2)
    os.replace(tmp, path)


@contextlib.contextmanager
def phase(what: str, enabled: bool = True):
    """Announces a phase of a run that can take a while (generating data, compiling, evaluating): a
    line when it starts and one with its duration, above the progress bar if there is one."""
    if enabled:
        tqdm.write(f"{what} ...", file=sys.stdout)
        sys.stdout.flush()
    t0 = time.perf_counter()
    yield
    if enabled:
        tqdm.write(f"{what}: {time.perf_counter() - t0:.1f} s", file=sys.stdout)
        sys.stdout.flush()


def progress_bar(total: int, initial: int, enabled: bool):
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step",
                dynamic_ncols=True, file=sys.stderr, smoothing=0.1)


def read_summary(workdir: str) -> dict:
    path = os.path.join(workdir, "summary.json")
    if not os.path.exists(path):
        raise ConfigError(f"{path} not found; --config.compare_to must name the workdir of "
                          "a finished run")
    with open(path) as f:
        return json.load(f)


def _ready(device_metrics) -> bool:
    """Whether a step's metrics (so the step) have been computed; host values always are."""
    leaf = jax.tree.leaves(device_metrics)[0]
    return leaf.is_ready() if isinstance(leaf, jax.Array) else True


class PendingMetrics:
    """Metrics of recent steps kept on the device and fetched together, so the host never blocks
    on a step it has just dispatched. images_per_sec covers the time since the last fetch, less
    the time spent inside `paused()` (compiling, evaluating, checkpointing); the fetch waits for
    every pending step, so it is the rate of completed steps."""

    def __init__(self):
        self._items: list = []
        self._completed = 0  # leading pending steps known to have finished on the device
        self._images = 0
        self._since = time.perf_counter()
        self._paused_s = 0.0

    def add(self, record: dict, device_metrics, images: int) -> None:
        self._items.append((record, device_metrics))
        self._images += images

    def newly_completed(self) -> int:
        """How many more pending steps have finished on the device since the last call (steps
        finish in order, so the first not ready ends the count)."""
        done = self._completed
        while done < len(self._items) and _ready(self._items[done][1]):
            done += 1
        new, self._completed = done - self._completed, done
        return new

    @property
    def uncounted(self) -> int:
        """Pending steps that newly_completed has not counted yet."""
        return len(self._items) - self._completed

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
        self._completed = 0
        return out


class RunLog:
    """Everything the loop reports: metrics of recent steps kept on the device and fetched at the
    cadences (`add`, `fetch`; the caller checks them and `write`s them), metrics.jsonl and the
    viewers, the progress bar (process 0 only) and the kNN lines."""

    def __init__(self, workdir: str, start: int, total_steps: int, config,
                 main_process: bool = True):
        self._metrics = MetricsLog(workdir, resume_step=start) if main_process else None
        self._viewers = viewers.Viewers(workdir, config, start) if main_process else None
        self._pending = PendingMetrics()
        self._main = main_process
        self._bar_args = (total_steps, start, bool(config.progress_bar) and main_process)
        self._bar = None

    @property
    def bar(self):
        if self._bar is None:  # made at the first step, after the initial kNN line
            self._bar = progress_bar(*self._bar_args)
        return self._bar

    def paused(self):
        """A block whose time is left out of images_per_sec."""
        return self._pending.paused()

    def add(self, done: int, plan, resolution: int, magnitude: float, device_metrics,
            images: int) -> None:
        self._pending.add({"step": done, "epoch": plan.epoch(done), "resolution": resolution,
                           "magnitude": magnitude}, device_metrics, images)
        self.bar.update(self._pending.newly_completed())  # the bar counts finished steps only

    def fetch(self) -> list[dict]:
        """The pending steps' metrics, fetched from the device (waits for every pending step),
        in step order; written only when the caller `write`s them."""
        uncounted = self._pending.uncounted
        records = self._pending.fetch()
        self.bar.update(uncounted)
        if records:
            last = records[-1]
            self.bar.set_postfix(loss=f"{last['loss']:.4f}", res=last["resolution"],
                                 lr=f"{last['lr']:.3g}", img_s=f"{last['images_per_sec']:.0f}")
        return records

    def knn(self, step: int, plan, record) -> None:
        """Logs the kNN accuracy just measured (record.knn_top1) with the cost so far."""
        entry = {"step": step, "epoch": plan.epoch(step), "knn_top1": record.knn_top1,
                 "pflops": record.train_flops / 1e15, "train_time_s": record.train_time_s}
        if step == 0:
            self.write(entry)
            if self._main:
                print(f"kNN top-1 at initialisation: {100 * record.knn_top1:.2f}%", flush=True)
            return
        self.write({**entry, "wall_clock_s": record.wall_clock_s})
        if self._main:
            self.bar.write(f"epoch {plan.epoch(step):g}: kNN top-1 {100 * record.knn_top1:.2f}%")

    def write(self, entry: dict) -> None:
        """One record (a step's metrics, an event such as a config change on resume) in
        metrics.jsonl and the viewers."""
        if self._metrics is not None:
            self._metrics.write(entry)
            self._viewers.write(entry)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._metrics is not None:
            self._metrics.close()
            self._viewers.close()
