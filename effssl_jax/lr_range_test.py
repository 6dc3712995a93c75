"""LR range test (Smith, 2018), used by the paper to choose F1-CLR's eps_max.

The learning rate rises exponentially over a short run while the loss is recorded; the run stops
once the smoothed loss diverges. Writes lr_range.csv and lr_range.png to the workdir and prints a
suggested eps_max with the rule that produced it.
"""
from __future__ import annotations

import csv
import io

import numpy as np

from effssl_jax import run_log, storage, train

SMOOTHING = 0.98  # bias-corrected EMA of the loss, as in Smith (2018) / fastai
DIVERGENCE = 4.0  # stop when the smoothed loss exceeds best + 4 * |best| (or 4x a positive best)


def smooth(losses) -> np.ndarray:
    out, avg = [], 0.0
    for i, loss in enumerate(losses, 1):
        avg = SMOOTHING * avg + (1 - SMOOTHING) * loss
        out.append(avg / (1 - SMOOTHING ** i))
    return np.asarray(out)


def suggest(lrs, losses) -> tuple[float, str]:
    """eps_max = (lr of the lowest smoothed loss) / 10, the common rule for 1-cycle policies: the
    largest rate whose loss still falls clearly, one decade before the loss turns up."""
    s = smooth(losses)
    i = int(np.nanargmin(s))
    return float(lrs[i]) / 10, (f"lowest smoothed loss {s[i]:.4f} at lr {lrs[i]:.3g}; "
                                "suggested eps_max = that lr / 10")


class DivergenceStop:
    def __init__(self):
        self.losses: list[float] = []

    def __call__(self, record: dict) -> bool:
        loss = record["loss"]
        if not (np.isfinite(loss) and record.get("healthy", 1.0) == 1.0):
            return True
        self.losses.append(loss)
        s = smooth(self.losses)
        best = float(np.min(s))
        return len(s) > 10 and s[-1] > best + DIVERGENCE * max(abs(best), 1e-3)


def run(config, workdir: str) -> dict:
    summary = train.run(config, workdir, stop=DivergenceStop())
    records = [r for r in run_log.read_metrics(workdir) if "loss" in r]
    lrs = np.array([r["lr"] for r in records])
    losses = np.array([r["loss"] for r in records], dtype=float)
    lr, rule = suggest(lrs, losses)
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["step", "lr", "loss", "smoothed_loss"])
    writer.writerows(zip([r["step"] for r in records], lrs, losses, smooth(losses)))
    storage.write_text(storage.join(workdir, "lr_range.csv"), table.getvalue())
    plot(lrs, losses, lr, storage.join(workdir, "lr_range.png"), config.method)
    print(f"LR range test: {rule} -> {lr:.3g}\n  use --config.optim.lr={lr:.3g}", flush=True)
    summary.update(suggested_lr=lr, rule=rule)
    run_log.write_json(storage.join(workdir, "summary.json"), summary)
    return summary


def plot(lrs, losses, suggested, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses, alpha=0.3, label="loss")
    ax.plot(lrs, smooth(losses), label=f"smoothed (EMA {SMOOTHING})")
    ax.axvline(suggested, color="k", ls="--", label=f"suggested eps_max {suggested:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test ({title})")
    ax.legend()
    fig.tight_layout()
    with storage.open_for_writing(path) as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
