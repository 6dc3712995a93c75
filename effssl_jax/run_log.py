"""What a run writes for people: metrics.jsonl (and the viewers: TensorBoard, W&B), a progress bar,
phase lines and summary.json."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import sys
import time

import jax
from tqdm.auto import tqdm

from effssl_jax import storage, viewers
from effssl_jax.errors import ConfigError

METRICS, METRICS_PARTS = "metrics.jsonl", "metrics.jsonl.parts"


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """One JSON object per line in WORKDIR/metrics.jsonl. On resume from step s, lines of later
    steps (written after the checkpoint by a run that died) are dropped first, so the log reads as
    one uninterrupted run; a run starting from step 0 starts it afresh.

    Locally the file is appended to and flushed at every line. An object store has no append, so
    in a bucket each `flush` (RunLog's, at the log cadence and before every checkpoint) writes the
    lines since the last one as a new object WORKDIR/metrics.jsonl.parts/SESSION-FROM-CHUNK.jsonl:
    a crash loses the lines since the last flush, never a flushed one. SESSION counts the runs
    that wrote to the workdir and FROM is the step each resumed from; readers fold the parts in
    order, each session first dropping the lines after its FROM (`_fold`), as the local file is
    cut on resume. Nothing is rewritten or deleted."""

    def __init__(self, workdir: str, resume_step: int = 0):
        self.path = storage.join(workdir, METRICS)
        self._remote = storage.is_remote(workdir)
        if self._remote:
            self._parts = storage.join(workdir, METRICS_PARTS)
            sessions = [int(name.split("-")[0]) for name in storage.listdir(self._parts)]
            self._prefix = f"{1 + max(sessions, default=-1):06d}-{resume_step:012d}"
            self._chunk, self._lines = 0, []
            return
        if os.path.exists(self.path):
            kept = [line.rstrip("\n") + "\n" for line, record in self._records(self.path)
                    if resume_step and record.get("step", 0) <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(kept)
        self._file = open(self.path, "a")

    @staticmethod
    def _records(path: str, text: str | None = None) -> list[tuple[str, dict]]:
        """The (line, record) pairs of a file (or of its `text`); a last line that is not JSON
        (the run died while writing it) is dropped with a warning."""
        if text is None:
            with open(path) as f:
                text = f.read()
        lines = [line for line in io.StringIO(text) if line.strip()]
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
        line = json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n"
        if self._remote:
            self._lines.append(line)
            return
        self._file.write(line)
        self._file.flush()

    def flush(self) -> None:
        """Makes the lines written so far durable (in a bucket: one new object)."""
        if self._remote and self._lines:
            storage.write_text(storage.join(self._parts, f"{self._prefix}-{self._chunk:08d}.jsonl"),
                               "".join(self._lines))
            self._chunk, self._lines = self._chunk + 1, []

    def close(self) -> None:
        self.flush()
        if not self._remote:
            self._file.close()


def _fold(parts: list[tuple[str, str]]) -> list[dict]:
    """The records of metrics.jsonl.parts' (name, text) pairs, as one uninterrupted run: parts in
    name order; a session's first part drops the records after the step it resumed from (all of
    them if it started from step 0)."""
    records, session = [], None
    for name, text in sorted(parts):
        this, resumed_from = (int(field) for field in name.split("-")[:2])
        if this != session:
            session = this
            records = [r for r in records if resumed_from and r.get("step", 0) <= resumed_from]
        records += [record for _, record in MetricsLog._records(name, text)]
    return records


def read_metrics(workdir: str) -> list[dict]:
    """The records of WORKDIR/metrics.jsonl (a last line cut short is dropped, as on resume); in a
    bucket, of its parts; [] if there are none."""
    if storage.is_remote(workdir):
        parts = storage.join(workdir, METRICS_PARTS)
        return _fold([(name, storage.read_text(storage.join(parts, name)))
                      for name in storage.listdir(parts)])
    path = os.path.join(workdir, METRICS)
    return [record for _, record in MetricsLog._records(path)] if os.path.exists(path) else []


def write_json(path: str, obj) -> None:
    """A JSON file written whole: a reader never sees it half-written (storage.write_text)."""
    if isinstance(obj, dict):
        obj = {k: _jsonable(v) for k, v in obj.items()}
    storage.write_text(path, json.dumps(obj, indent=2))


def read_json_list(path: str) -> list:
    """A JSON list file written by `append_json` ([] when there is none yet)."""
    try:
        return json.loads(storage.read_text(path))
    except FileNotFoundError:
        return []


def append_json(path: str, record: dict) -> None:
    """Rewrites the JSON list at `path` whole with `record` added (never seen half-written; a
    bucket has no append)."""
    write_json(path, read_json_list(path) + [record])


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
    path = storage.join(workdir, "summary.json")
    try:
        return json.loads(storage.read_text(path))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; --config.compare_to must name the workdir of "
                          "a finished run") from None


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

    def flush(self) -> None:
        """Makes the records written so far durable (in a bucket, one new object): the loop
        flushes after each fetch, so before any checkpoint that follows."""
        if self._metrics is not None:
            self._metrics.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._metrics is not None:
            self._metrics.close()
            self._viewers.close()
