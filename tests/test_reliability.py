"""Faults a run meets and what the library does about them (docs/reliability.md): two runs on one
workdir, a lock left by a dead run, a metrics line cut short, values that cannot work, a mistyped
config key, rerunning a finished run, and divergence."""
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from test_launch import ROOT, TINY, launch, metrics
from tiny import tiny_config

from effssl_jax import config_schema, experiment, health, run_log, train, workdir_lock
from effssl_jax.errors import ConfigError, DivergenceError, UserError
from effssl_jax.run_log import MetricsLog

# --- 1. One run per workdir (and 5., end to end: rerunning it once it has finished) ----------

BUSY_ARGS = ["--config.epochs=6", "--config.log_every_steps=1", "--config.eval.every_epochs=0",
             "--config.eval.at_init=False", "--config.checkpoint_every_steps=16"]


@pytest.fixture(scope="module")
def busy_then_finished(tmp_path_factory):
    """A tiny launch.py run (48 steps) and, once it holds WORKDIR/.lock, a second one on the same
    workdir: (workdir, first run's pid, first run's exit code, second run's CompletedProcess)."""
    wd = tmp_path_factory.mktemp("busy") / "run"
    first = launch(wd, *BUSY_ARGS, wait=False)
    try:
        deadline = time.time() + 300
        while not (wd / ".lock").exists():
            assert first.poll() is None and time.time() < deadline, "first run ended early"
            time.sleep(0.05)
        holder = json.loads((wd / ".lock").read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        second = launch(wd, *BUSY_ARGS)
        assert first.poll() is None, "the first run ended before the second one was refused"
        return wd, first.pid, first.wait(timeout=600), second
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_second_run_on_a_busy_workdir_fails_in_one_line(busy_then_finished):
    wd, pid, first_rc, second = busy_then_finished
    assert second.returncode == 2, second.stderr[-3000:]
    errors = [s for s in second.stderr.splitlines() if s.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in second.stderr
    assert f"is in use by pid {pid} on {socket.gethostname()}" in errors[0]
    assert "wait for it or use another --workdir" in errors[0]
    assert first_rc == 0
    steps = [m["step"] for m in metrics(wd) if "loss" in m]
    assert steps == list(range(1, 6 * 8 + 1))  # strictly increasing, each once
    assert not (wd / ".lock").exists()  # released at the end


def test_rerunning_a_finished_launch_is_a_noop(busy_then_finished):
    wd = busy_then_finished[0]
    files = {name: (wd / name).read_bytes()
             for name in ("summary.json", "metrics.jsonl", "config.json")}
    r = launch(wd, *BUSY_ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "finished already: knn_top1_init=" in r.stdout and "resumed from" not in r.stdout
    for name, content in files.items():
        assert (wd / name).read_bytes() == content, name


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}
    (tmp_path / ".lock").write_text(json.dumps(stale))
    with caplog.at_level(logging.WARNING):
        with workdir_lock.hold(str(tmp_path)):
            held = json.loads((tmp_path / ".lock").read_text())
            assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    assert f"pid {stale['pid']}" in caplog.text and "taking over" in caplog.text
    assert not (tmp_path / ".lock").exists()


def test_live_or_foreign_lock_refuses_and_a_failed_run_releases(tmp_path):
    live = {"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}
    (tmp_path / ".lock").write_text(json.dumps(live))
    with pytest.raises(UserError, match=f"in use by pid {os.getpid()} on {socket.gethostname()}"):
        workdir_lock.acquire(str(tmp_path))
    (tmp_path / ".lock").write_text(json.dumps({**live, "host": "elsewhere"}))
    with pytest.raises(UserError, match="on elsewhere .*delete"):
        workdir_lock.acquire(str(tmp_path))  # another host's pid cannot be checked
    (tmp_path / ".lock").unlink()
    with pytest.raises(RuntimeError), workdir_lock.hold(str(tmp_path)):
        raise RuntimeError("the run failed")
    assert not (tmp_path / ".lock").exists()


# --- 2. A metrics line cut short by a crash ---------------------------------------------------


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n{"step": 3, "lo')
    with caplog.at_level(logging.WARNING):
        log = MetricsLog(str(tmp_path), resume_step=2)
    log.write({"step": 3, "loss": 0.8})
    log.close()
    assert str(path) in caplog.text and "last line" in caplog.text
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_reading_metrics_drops_a_torn_last_line_too(tmp_path):
    """What the LR range test and the report helpers read after a run that died mid-write."""
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    assert run_log.read_metrics(str(tmp_path)) == [{"step": 1, "loss": 1.0}]
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "lo\n{"step": 2, "loss": 1.0}\n')
    with pytest.raises(json.JSONDecodeError):  # damage before the last line is not hidden
        run_log.read_metrics(str(tmp_path))


def test_last_metrics_line_without_newline_is_not_glued_to_the_next(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}')
    log = MetricsLog(str(tmp_path), resume_step=2)
    log.write({"step": 3, "loss": 0.8})
    log.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


# --- 3. Values that cannot work ---------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"keep_checkpoints": 0}, "keep_checkpoints=0 must be >= 1; set --config.keep_checkpoints"),
    ({"log_every_steps": 0}, "log_every_steps=0 must be >= 1; set --config.log_every_steps"),
    ({"checkpoint_every_steps": -1},
     "checkpoint_every_steps=-1 must be >= 1; set --config.checkpoint_every_steps"),
    ({"optim.schedule": "one_cycle", "optim.one_cycle_fraction": 1.0},
     "optim.one_cycle_fraction=1.0 must lie in (0, 1)"),
    ({"optim.schedule": "one_cycle", "optim.one_cycle_fraction": 0.0},
     "optim.one_cycle_fraction=0.0 must lie in (0, 1)"),
    ({"optim.schedule": "cosine", "optim.warmup_epochs": 5.0},
     "optim.warmup_epochs=5.0 is ignored by optim.schedule='cosine'; only f1clr and "
     "warmup_cosine warm up: set --config.optim.warmup_epochs=0"),
    ({"eval.crop_fraction": 1.2}, "eval.crop_fraction=1.2 must lie in (0, 1]"),
    ({"data.canvas_aspect": 0.9}, "data.canvas_aspect=0.9 must be >= 1"),
    ({"hard_augment.pairs": "any"}, "hard_augment.pairs='any' is unknown; valid: auto, all, cross"),
])
def test_validate_names_key_and_fix(change, message):
    c = config_schema.default_config()
    for key, value in change.items():
        sub, _, leaf = key.rpartition(".")
        (c[sub] if sub else c)[leaf] = value
    with pytest.raises(ConfigError) as e:
        config_schema.validate(c)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_valid_edges_pass():
    c = config_schema.default_config()
    c.keep_checkpoints = c.log_every_steps = c.checkpoint_every_steps = 1
    c.optim.schedule, c.optim.one_cycle_fraction, c.optim.warmup_epochs = "one_cycle", 0.5, 0.0
    config_schema.validate(c)
    c.optim.schedule, c.optim.warmup_epochs = "f1clr", 5.0
    config_schema.validate(c)
    c.optim.one_cycle_fraction = 2.0  # only read by one_cycle
    config_schema.validate(c)


def _all_recipes():
    from configs import ablation
    names = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                   if f.endswith(".py") and f not in ("__init__.py", "common.py"))
    args = {name: [None] for name in names}
    args["quickstart"] += [n for n in names if n.endswith(("_baseline", "_f1clr"))]
    args["ablation"] = args["imagenette_ablation"] = list(ablation.ROWS)
    return [f"{n}.py" + (f":{a}" if a else "") for n in names for a in args[n]]


@pytest.mark.parametrize("recipe", _all_recipes())
def test_every_recipe_passes_validation(recipe):
    config_schema.validate(config_schema.from_recipe(os.path.join(ROOT, "configs", recipe)))


# --- 4. A mistyped config key -----------------------------------------------------------------


def test_unknown_config_key_is_one_line_with_a_suggestion(tmp_path):
    cmd = [sys.executable, "launch.py", *TINY, f"--workdir={tmp_path / 'w'}",
           "--config.optim.lrr=0.1"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip() == "error: unknown config key optim.lrr; did you mean optim.lr?"
    assert not (tmp_path / "w").exists()  # failed while parsing flags, before main


# --- 5. Rerunning a finished run --------------------------------------------------------------


def _finished_workdir(wd, config, checkpoint_step: int):
    """A workdir as a finished run of `config` leaves it, without training: summary.json of its
    last step, metrics.jsonl and a checkpoint (of a stand-in state) at `checkpoint_step`."""
    import jax.numpy as jnp

    from effssl_jax import checkpoint, run_record
    os.makedirs(wd)
    total = 4  # tiny_run_config: 64 images, batch 16, 1 epoch
    (wd / "summary.json").write_text(json.dumps({
        "steps": total, "knn_top1_init": 0.1, "knn_top1": 0.2, "total_pflops": 1e-6,
        "wall_clock_s": 3.0}, indent=2))
    (wd / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n"
                                              for s in range(1, total + 1)))
    ckpt = checkpoint.Checkpointer(str(wd))
    ckpt.save(checkpoint_step, {"w": jnp.zeros(2)}, run_record.RunRecord(num_examples=64))
    ckpt.wait()
    ckpt.close()
    return str(wd)


def test_rerunning_a_finished_run_does_no_work(tmp_path, capsys, monkeypatch):
    from runs import tiny_run_config
    config = tiny_run_config("simsiam_baseline", epochs=1)
    wd = _finished_workdir(tmp_path / "run", config, checkpoint_step=4)
    files = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}

    def no_work(*args, **kwargs):
        raise AssertionError("a finished run opened its data or built its experiment")

    monkeypatch.setattr(train.pipeline, "open_run_data", no_work)
    monkeypatch.setattr(train.experiment, "build", no_work)
    summary = train.run(config, wd)
    assert capsys.readouterr().out == ("finished already: knn_top1_init=0.1, knn_top1=0.2, "
                                       "total_pflops=1e-06, wall_clock_s=3.0\n")
    assert summary == json.loads(files["summary.json"])
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()} == files
    config.epochs = 2  # a longer plan: trains on
    assert train._finished(config, wd) is None


def test_summary_without_the_last_checkpoint_is_not_finished(tmp_path):
    from runs import tiny_run_config
    config = tiny_run_config("simsiam_baseline", epochs=1)
    wd = _finished_workdir(tmp_path / "run", config, checkpoint_step=2)
    assert train._finished(config, wd) is None


def test_one_plan_per_run_the_one_of_the_images_it_decoded(tmp_path, image_folder):
    """15 images and an undecodable file, batch 8: the run plans 1 step an epoch for the 15 it
    decoded (16 files would make 2). Checking whether it has finished and restoring it use that
    plan, not a second one made from the file count or the batch size."""
    src = image_folder(per_class=5, classes=3, to=tmp_path / "data")
    (src / "train" / "disk" / "zero.jpg").write_bytes(b"")
    config = tiny_config()
    config.update(dataset=f"folder:{src}", batch_size=8, epochs=1, progress_bar=False)
    config.data.loader = "memory"
    config.eval.update(every_epochs=0, at_init=False)
    wd = str(tmp_path / "run")
    summary = train.run(config, wd)
    assert summary["steps"] == 1
    assert train._finished(config, wd) == summary
    exp, _, step = experiment.restore(wd)
    assert (exp.plan.num_examples, exp.plan.total_steps, step) == (15, 1, 1)


# --- Divergence: an unhealthy state never reaches a checkpoint ---------------------------------

def _diverging_config(**optim):
    config = tiny_config()
    config.synthetic_train_size, config.synthetic_test_size = 64, 32  # 4 steps/epoch, 8 steps
    config.eval.update(every_epochs=0, at_init=False)
    config.log_every_steps, config.checkpoint_every_steps, config.progress_bar = 1, 1, False
    config.optim.update(optim)
    return config


def _assert_every_checkpoint_finite(workdir) -> list[int]:
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    for step in saved:
        _, state, _ = experiment.restore(str(workdir), step)
        arrays = jax.device_get((state.params, state.batch_stats, state.opt_state))
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(arrays)), step
    return saved


def test_lr_1e6_stops_before_any_checkpoint_and_a_rerun_at_lr_0_1_finishes(tmp_path, capsys):
    """At lr 1e6 the first update is ~1e5 x the weights; the states it leads to stay finite for
    several steps but overflow at any lr (weight decay multiplies |w| by ~lr x wd per step), so the
    guard stops at step 1 and nothing is saved."""
    with pytest.raises(DivergenceError, match=r"diverged at step 1: the update was .*x the "
                       r"weights .*no checkpoint was written"):
        train.run(_diverging_config(lr=1e6), str(tmp_path))
    assert _assert_every_checkpoint_finite(tmp_path) == []
    summary = train.run(_diverging_config(lr=0.1), str(tmp_path))  # the message's advice
    assert summary["steps"] == 8 and "resumed from" not in capsys.readouterr().out


def test_divergence_mid_run_saves_only_healthy_states_and_the_rerun_resumes_and_finishes(
        tmp_path, capsys):
    """The LR range test's ramp, 0.01 -> 1e6 over 8 steps: the first steps are healthy and saved;
    the run stops at the first update larger than the weights. The rerun with a sane schedule
    resumes from the last healthy checkpoint, says what changed, and finishes."""
    with pytest.raises(DivergenceError, match=r"diverged at step (\d+)") as e:
        train.run(_diverging_config(schedule="exponential", lr_range=(0.01, 1e6)), str(tmp_path))
    diverged = int(re.search(r"diverged at step (\d+)", str(e.value)).group(1))
    saved = _assert_every_checkpoint_finite(tmp_path)
    assert saved and saved[-1] == diverged - 1, (saved, diverged)
    assert f"the last checkpoint, step {diverged - 1}, is finite" in str(e.value)
    capsys.readouterr()
    summary = train.run(_diverging_config(schedule="cosine", lr=0.1), str(tmp_path))
    out = capsys.readouterr().out
    assert f"at step {saved[-1]}" in out and summary["steps"] == 8
    assert "resuming with a changed config: optim.schedule 'exponential' -> 'cosine'" in out
    notes = [m for m in metrics(tmp_path) if "config_change" in m]
    assert notes == [{"step": saved[-1], "config_change": {
        "optim.schedule": ["exponential", "cosine"], "optim.lr_range": [[0.01, 1e6], [1e-4, 10]]}}]
    losses = [m["loss"] for m in metrics(tmp_path) if "loss" in m]
    assert len(losses) == 8 and all(np.isfinite(losses))


def test_skip_drops_unhealthy_updates_and_stops_after_too_many_in_a_row():
    from tiny import compiled_step, put_batch, tiny_images
    config = tiny_config()
    config.optim.update(lr=1e6, on_nonfinite="skip")
    state, step, mesh, _ = compiled_step(config, jax.devices()[:1], skip_nonfinite=True)
    before = jax.device_get((state.step, state.params, state.batch_stats, state.opt_state))
    new, m = step(state, put_batch(tiny_images(), mesh), np.float32(5.0))  # donates `state`
    assert float(m["healthy"]) == 0.0 and float(m["update_ratio"]) > 1.0
    assert int(new.step) == before[0] + 1  # on to the next batch ...
    same = jax.tree.map(lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()),
                        jax.device_get((new.params, new.batch_stats, new.opt_state)), before[1:])
    assert all(jax.tree.leaves(same))  # ... with the state of before

    checks = health.Health(_skip_config(max_in_a_row=3).optim)
    for done, healthy in enumerate([0, 0, 1, 0, 0], 1):  # two, then two in a row: go on
        checks.check(_record(done, healthy))
    assert checks.skipped_in_a_row == 2
    with pytest.raises(DivergenceError, match=r"at step 6: .*\(3 updates in a row skipped\)"):
        checks.check(_record(6, 0))
    with pytest.raises(DivergenceError, match="at step 1"):  # the default: stop at the first
        health.Health(config_schema.default_config().optim).check(_record(1, 0))


class _Plan:
    def epoch(self, step):
        return step / 4


def _record(step, healthy):
    """A step's fetched metrics."""
    return {"step": step, "loss": 1.0, "lr": 0.1, "healthy": float(healthy),
            "update_ratio": 10.0 if not healthy else 0.01}


def _skip_config(max_in_a_row):
    c = config_schema.default_config()
    c.progress_bar = False
    c.optim.update(on_nonfinite="skip", max_skipped_in_a_row=max_in_a_row)
    return c


# --- Resuming with a changed config -----------------------------------------------------------

def _saved_run(tmp_path, **changes):
    """A workdir holding the default config's config.json, and that config with `changes`."""
    saved = config_schema.default_config()
    (tmp_path / "config.json").write_text(saved.to_json_best_effort(indent=2))
    new = config_schema.default_config()
    for key, value in changes.items():
        sub, _, leaf = key.rpartition(".")
        (new[sub] if sub else new)[leaf] = value
    return str(tmp_path), new


def test_schedule_and_cadence_changes_are_allowed_and_listed(tmp_path):
    workdir, new = _saved_run(tmp_path, **{"optim.lr": 0.2, "epochs": 900, "eval.every_epochs": 5.0,
                                           "log_every_steps": 50, "augment.crop_scale": (0.3, 1.0),
                                           "byol.proj_dim": 128})  # another method's: unused
    assert config_schema.resume_changes(workdir, new) == {
        "optim.lr": (0.1, 0.2), "epochs": (800, 900), "eval.every_epochs": (10.0, 5.0),
        "log_every_steps": (10, 50), "augment.crop_scale": ([], [0.3, 1.0]),
        "byol.proj_dim": (256, 128)}
    assert config_schema.resume_changes(str(tmp_path / "new"), new) == {}  # nothing saved


@pytest.mark.parametrize("changes, named", [
    ({"batch_size": 256}, "batch_size=128"),
    ({"seed": 1}, "seed=0"),
    ({"model.width": 32}, "model.width=64"),
    ({"simsiam.proj_dim": 512, "optim.lr": 0.2}, "simsiam.proj_dim=2048"),
    ({"optim.clip_grad_norm": 3.0}, "optim.clip_grad_norm=0.0"),
])
def test_shape_and_data_order_changes_are_refused_naming_the_keys(tmp_path, changes, named):
    workdir, new = _saved_run(tmp_path, **changes)
    with pytest.raises(ConfigError) as e:
        config_schema.resume_changes(workdir, new)
    message = str(e.value)
    assert named in message and "use a new --workdir" in message and "\n" not in message
    assert "optim.lr" not in message  # allowed keys are not named


# --- Small faults: bad workdirs, no checkpoint, restarts, refused runs ------------------------

def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    for workdir in ("file", "file/run"):
        with pytest.raises(ConfigError, match=f"cannot use --workdir .*{workdir}: .*; give a "
                           "directory that can be created and written"):
            train.run(tiny_config(), str(tmp_path / workdir))


def test_evaluating_a_workdir_without_checkpoints_creates_nothing(tmp_path):
    (tmp_path / "config.json").write_text(tiny_config().to_json_best_effort())
    with pytest.raises(UserError, match="no checkpoint in .*train the run first"):
        experiment.restore(str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_a_run_starting_from_step_0_starts_metrics_afresh(tmp_path):
    """A restart from scratch (no checkpoint) must not repeat the step-0 kNN line."""
    knn0 = '{"step": 0, "knn_top1": 0.1}\n'
    (tmp_path / "metrics.jsonl").write_text(knn0 + '{"step": 1, "loss": 1}\n')
    MetricsLog(str(tmp_path), resume_step=0).close()
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    (tmp_path / "metrics.jsonl").write_text(knn0 + '{"step": 5, "loss": 1}\n')
    MetricsLog(str(tmp_path), resume_step=4).close()  # a resume keeps the kNN at step 0
    assert (tmp_path / "metrics.jsonl").read_text() == knn0


def test_a_run_refused_for_its_data_leaves_no_config(tmp_path):
    config = tiny_config()
    config.dataset = f"folder:{tmp_path / 'no_such_folder'}"
    with pytest.raises(UserError, match="no_such_folder"):
        train.run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "config.json").exists()


# --- Checkpoints that cannot be written or read -----------------------------------------------

def _unwritable_checkpoints(workdir):
    """WORKDIR/checkpoints that nothing can be written into: mode 555, or, for root (who ignores
    modes), a link to a sysfs directory (where even root cannot create files)."""
    os.makedirs(workdir)
    if os.geteuid() != 0:
        os.makedirs(workdir / "checkpoints", mode=0o555)
        return
    if not os.path.isdir("/sys/kernel"):
        pytest.skip("running as root without /sys: no directory that root cannot write")
    os.symlink("/sys/kernel", workdir / "checkpoints")


def test_a_failed_checkpoint_write_exits_within_30_s_in_one_line(tmp_path):
    wd = tmp_path / "run"
    _unwritable_checkpoints(wd)
    proc = launch(wd, "--config.epochs=1", "--config.checkpoint_every_steps=2",
                  "--config.eval.every_epochs=0", "--config.eval.at_init=False", wait=False,
                  capture=True)
    try:
        for line in proc.stderr:  # orbax logs the failure; then the library's one line
            if line.startswith("error:"):
                failed_at = time.time()
                break
        else:
            raise AssertionError("the run ended without an error line")
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.stderr.close()
    assert time.time() - failed_at < 30 and rc == 2
    assert "could not write a checkpoint (step 2)" in line and "make it writable" in line


DAMAGE_ARGS = ["--config.epochs=1", "--config.checkpoint_every_steps=4",
               "--config.eval.every_epochs=0", "--config.eval.at_init=False"]


def _truncate_arrays(checkpoint):
    for path in checkpoint.rglob("d/*"):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _delete_manifest(checkpoint):
    (checkpoint / "state" / "manifest.ocdbt").unlink()


def test_a_truncated_newest_checkpoint_is_skipped_and_the_run_continues_exactly(tmp_path, capsys):
    """An 8-step run stopped after step 5 has checkpoints 2 and 4 (time cadence: every log step,
    2); truncating 4's files makes the rerun resume from 2, with a warning, and match an
    uninterrupted run step for step. (The program of the divergence tests' reruns: no compile.)"""
    def config():
        c = _diverging_config(lr=0.1)
        c.log_every_steps, c.checkpoint_every_steps, c.checkpoint_every_minutes = 2, 10**6, 1e-9
        return c

    train.run(config(), str(tmp_path / "full"))
    reference = {m["step"]: m["loss"] for m in metrics(tmp_path / "full") if "loss" in m}
    wd = tmp_path / "run"
    train.run(config(), str(wd), stop=lambda record: record["step"] > 5)
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir()) == [2, 4]
    _truncate_arrays(wd / "checkpoints" / "4")
    capsys.readouterr()
    summary = train.run(config(), str(wd))
    out = capsys.readouterr().out
    warning = f"moved to {wd / 'checkpoints_damaged'}, resuming from checkpoint 2"
    assert re.search(r"^warning: checkpoint 4 \(ValueError: .*\) cannot be restored; "
                     rf"{re.escape(warning)}$", out, re.M), out
    assert "at step 2" in out
    assert (wd / "checkpoints_damaged" / "4").is_dir()  # kept for a look, out of the way
    assert summary["steps"] == 8
    assert {m["step"]: m["loss"] for m in metrics(wd) if "loss" in m} == reference


def test_the_storage_layers_noise_is_dropped_and_nothing_else(caplog):
    """What the launch tests below meet only when the timing is right: the unraisable errors and
    asyncio's log lines of reads still in flight when a restore failed."""
    import asyncio
    import gc

    from effssl_jax import checkpoint
    seen = []
    before = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(str(u.exc_value))
    noise = checkpoint._StorageNoise()
    noise.install()
    try:
        for error in (RuntimeError("Event loop is closed"), RuntimeError("a bug")):
            sys.unraisablehook(type("U", (), {"exc_value": error, "object": None})())
        loop = asyncio.new_event_loop()
        for message in ("read failed", "another"):
            future = loop.create_future()
            future.set_exception(ValueError(message))
            del future
        gc.collect()
        loop.close()
        logging.getLogger("asyncio").error("something else")
    finally:
        noise.remove()
        sys.unraisablehook = before
    assert seen == ["a bug"]
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == ["something else"]


@pytest.fixture(scope="module")
def damage_source(tmp_path_factory):
    """A tiny 8-step launch.py run with checkpoints 4 and 8 (read-only)."""
    wd = tmp_path_factory.mktemp("damage_source") / "run"
    r = launch(wd, *DAMAGE_ARGS)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir()) == [4, 8]
    return wd


@pytest.mark.parametrize("damage", [_truncate_arrays, _delete_manifest])
def test_a_damaged_newest_checkpoint_costs_one_warning_line(tmp_path, damage_source, damage):
    """The storage layer fails a damaged checkpoint's reads in flight on an event loop it has
    closed, and each such read printed a traceback or an asyncio error line (docs/reliability.md
    has the counts) beside a warning printed twice."""
    wd = tmp_path / "run"
    shutil.copytree(damage_source, wd)
    (wd / "summary.json").unlink()  # so that the rerun restores instead of finishing at once
    damage(wd / "checkpoints" / "8")
    r = launch(wd, *DAMAGE_ARGS)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert out.count("cannot be restored") == 1 and "resuming from checkpoint 4" in out, out
    assert "Traceback" not in out and "Event loop is closed" not in out, out[-3000:]
    noise = [line for line in out.splitlines()  # nothing else names it, nor logs a warning
             if "checkpoints/8" in line or re.match(r"[WEF]\d{4} ", line)]
    assert len(noise) == 1 and noise[0].startswith("warning: checkpoint 8 ("), out[-3000:]
    assert json.loads((wd / "summary.json").read_text())["steps"] == 8


def test_a_second_sigint_aborts_at_once(tmp_path):
    code = ("import os, signal, time\n"
            "from effssl_jax.preemption import StopSignals\n"
            "with StopSignals() as s:\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(0.5)\n"
            "    assert s.requested(3), 'the first SIGINT is a request'\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(30)\n")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 128 + 2, r.stderr[-2000:]
    assert time.time() - t0 < 25 and "SIGINT again: aborting" in r.stderr
    assert "finishing this step and saving a checkpoint" in r.stderr


class _Pending:
    """A step's metric on the device, finished when `ready` is set."""
    ready = False


def test_the_bar_counts_finished_steps_not_dispatched_ones(monkeypatch):
    monkeypatch.setattr(run_log, "_ready", lambda m: m["loss"].ready)
    monkeypatch.setattr(run_log.jax, "device_get", lambda ms: [
        {"loss": np.float32(1.0), "lr": np.float32(0.1)} for _ in ms])
    c = config_schema.default_config()
    log = run_log.RunLog("", 10, 100, c, main_process=False)
    log._bar = run_log.progress_bar(100, 10, enabled=True)  # shown, though not process 0
    steps = [_Pending() for _ in range(4)]
    steps[0].ready = steps[2].ready = True
    for done, m in enumerate(steps, 11):
        log.add(done, _Plan(), 16, 5.0, {"loss": m}, 16)
    assert log.bar.n == 11  # step 12 is still running, so 13 is not counted though ready
    steps[1].ready = True
    log.add(15, _Plan(), 16, 5.0, {"loss": _Pending()}, 16)
    assert log.bar.n == 13
    assert len(log.fetch()) == 5 and log.bar.n == 15  # the fetch waited for all of them
    log.close()


def test_viewers_without_their_package_are_one_line_naming_the_fix(tmp_path, monkeypatch):
    from effssl_jax import viewers
    c = config_schema.default_config()
    c.viewers.update(tensorboard=False, wandb="offline")
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(ConfigError, match="pip install wandb, or leave --config.viewers.wandb"):
        viewers.Viewers(str(tmp_path), c)
    c.viewers.wandb = "yes"
    with pytest.raises(ConfigError, match="viewers.wandb='yes' is unknown"):
        config_schema.validate(c)
    c.viewers.update(tensorboard=True, wandb="")
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ConfigError, match="pip install tensorboardX"):
        viewers.Viewers(str(tmp_path), c)
