"""End-to-end runs of launch.py on tiny configs: overrides, errors, exact resume after SIGKILL,
and one compiled step per resolution bucket under Super Progressive Learning + Hard Augment."""
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import COMPILE_FAST, made_once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config", "configs/quickstart.py", "--config.method=simsiam", "--config.model.width=8",
        "--config.model.arch=resnet10", "--config.model.conv_impl=xla",
        "--config.synthetic_train_size=256", "--config.synthetic_test_size=64",
        "--config.batch_size=32", "--config.progressive.r_max=16", "--config.progress_bar=False",
        "--config.simsiam.proj_dim=32", "--config.simsiam.pred_hidden=16"]


def launch(workdir, *overrides, wait=True, env=None, capture=False):
    """launch.py on TINY; wait=False: the Popen, with stderr a text pipe if `capture`."""
    cmd = [sys.executable, "launch.py", *TINY, f"--workdir={workdir}", *overrides]
    env = {**os.environ, "XLA_FLAGS": COMPILE_FAST, **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE if capture else subprocess.DEVNULL,
                                text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


RESUME_ARGS = ["--config.epochs=2", "--config.log_every_steps=1",
               "--config.checkpoint_every_steps=4", "--config.eval.every_epochs=1"]


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, worker_id):
    """({step: loss}, summary) of an uninterrupted 16-step run, the reference for resumed ones
    (made once for all workers)."""
    def make(full):
        r = launch(full, *RESUME_ARGS)
        assert r.returncode == 0, r.stderr[-3000:]
        (full / "stdout.txt").write_text(r.stdout)
    full = made_once(tmp_path_factory, worker_id, "uninterrupted", make)
    stdout = (full / "stdout.txt").read_text()
    # Each phase that can take a while is announced, then timed (the first step's compile may
    # already be done when the loop asks for it, so its line is not asserted).
    for phase in ("opening the data (synthetic: whole images, shorter side up to 42 px; "
                  "evaluation crops at 16 px)",
                  "building the model and counting the plan's cost", "compiling the kNN monitor",
                  "kNN at initialisation (256 bank, 64 query images)"):
        assert re.search(rf"^{re.escape(phase)} \.\.\.\n(.*\n)*{re.escape(phase)}: [0-9.]+ s$",
                         stdout, re.M), (phase, stdout[:2000])
    reference = {m["step"]: m["loss"] for m in metrics(full) if "loss" in m}
    assert sorted(reference) == list(range(1, 17))
    return reference, json.loads((full / "summary.json").read_text())


def _assert_continues_exactly(workdir, uninterrupted):
    reference, summary = uninterrupted
    assert json.loads((workdir / "summary.json").read_text())["knn_top1"] == summary["knn_top1"]
    resumed = [m for m in metrics(workdir) if "loss" in m]
    assert [m["step"] for m in resumed] == list(range(1, 17))  # no step lost or repeated
    for m in resumed:
        assert m["loss"] == reference[m["step"]], m["step"]


def test_resume_after_sigkill_continues_exactly(tmp_path, uninterrupted):
    killed = tmp_path / "killed"
    proc = launch(killed, *RESUME_ARGS, wait=False)
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "8").exists():  # a committed checkpoint, mid-run
        assert proc.poll() is None and time.time() < deadline, "run ended before step 8"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = launch(killed, *RESUME_ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout
    _assert_continues_exactly(killed, uninterrupted)
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["steps"] == 16
    assert summary["compiled_steps"] == 1  # the resumed process's one bucket


def test_sigterm_saves_the_current_step_and_the_rerun_continues_exactly(tmp_path, uninterrupted):
    """SIGTERM (a preemption notice) at a random step: the run finishes that step, saves it
    (whatever the 4-step cadence) and exits with EXIT_PREEMPTED."""
    from effssl_jax.preemption import EXIT_PREEMPTED
    at = random.Random().choice([5, 6, 7, 9, 10, 11])
    run = tmp_path / "preempted"
    proc = launch(run, *RESUME_ARGS, wait=False)
    deadline = time.time() + 600
    while not any(m.get("step", 0) >= at and "loss" in m for m in _metrics_so_far(run)):
        assert proc.poll() is None and time.time() < deadline, f"run ended before step {at}"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == EXIT_PREEMPTED
    saved = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    last_logged = max(m["step"] for m in metrics(run) if "loss" in m)
    assert saved[-1] == last_logged >= at, (saved, last_logged, at)
    r = launch(run, *RESUME_ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"at step {saved[-1]}" in r.stdout
    _assert_continues_exactly(run, uninterrupted)


def _metrics_so_far(workdir):
    try:
        return metrics(workdir)
    except (OSError, json.JSONDecodeError):  # not written yet, or a line being written
        return []


def test_super_progressive_hard_augment_compiles_once_per_bucket(tmp_path):
    r = launch(tmp_path / "sp", "--config.epochs=4", "--config.optim.schedule=f1clr",
               "--config.optim.warmup_epochs=1", "--config.progressive.schedule=super_progressive",
               "--config.progressive.r_min=8", "--config.progressive.bucket_step=8",
               "--config.hard_augment.enabled=True", "--config.hard_augment.num_views=3",
               "--config.hard_augment.r_sel=8", "--config.log_every_steps=1",
               "--config.eval.every_epochs=4", "--config.eval.at_init=False")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "sp" / "summary.json").read_text())
    # 16 px warm-up, then 8 and 16: two distinct buckets, one compiled step each.
    assert summary["compiled_steps"] == 2
    assert set(summary["gflops_per_step"]) == {"8", "16"}
    assert summary["steps_by_resolution"] == {"16": 8 + 12, "8": 12}
    g = summary["gflops_per_step"]
    assert g["8"] < g["16"]
    rows = [m for m in metrics(tmp_path / "sp") if "loss" in m]
    assert [m["resolution"] for m in rows] == [16] * 8 + [8] * 12 + [16] * 12
    lr = [m["lr"] for m in rows]
    mom = [m["momentum"] for m in rows]
    assert lr[0] == 0.0 and max(lr) == pytest.approx(lr[8], rel=1e-6)  # F1-CLR peak at t_w
    assert mom[0] == pytest.approx(0.95) and min(mom) == pytest.approx(mom[8])
    mags = [m["magnitude"] for m in rows]
    assert mags == sorted(mags) and mags[0] == pytest.approx(2.0) and mags[-1] == pytest.approx(5.0)
    # The selection is checked against brute force in test_hard_augment.py; here it is logged.
    assert all(math.isfinite(m["ha_selected_loss"]) for m in rows)


def test_overrides_and_config_errors(tmp_path):
    r = launch(tmp_path / "a", "--config.batch_size=0")
    assert r.returncode == 2 and "batch_size=0 must be positive" in r.stderr
    r = launch(tmp_path / "b", "--config.no_such_key=1")
    assert r.returncode != 0 and "no_such_key" in r.stderr
    r = launch(tmp_path / "c", "--config.dataset=folder:/nonexistent/images")
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert "--config.dataset=synthetic" in r.stderr
    assert len([s for s in r.stderr.splitlines() if s.startswith("error:")]) == 1


def test_batch_not_divisible_by_devices(tmp_path):
    r = launch(tmp_path / "d", "--config.batch_size=12",
               env={"XLA_FLAGS": f"--xla_force_host_platform_device_count=8 {COMPILE_FAST}"})
    assert r.returncode == 2
    assert "batch_size=12 is not divisible by the 8 devices" in r.stderr
