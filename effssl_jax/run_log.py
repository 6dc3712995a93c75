"""What a run writes for people: metrics.jsonl, a progress bar and summary.json."""
from __future__ import annotations

import json
import math
import os
import sys

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
