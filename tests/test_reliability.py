"""Faults a run meets and what the library does about them (docs/reliability.md): two runs on one
workdir, a lock left by a dead run, a metrics line cut short, values that cannot work, a mistyped
config key, rerunning a finished run, and divergence."""
import json
import logging
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from test_launch import ROOT, TINY, launch, metrics
from tiny import tiny_config

from effssl_jax import config_schema, experiment, run_log, train, workdir_lock
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
                   if f.endswith(".py") and f != "__init__.py")
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
    ckpt.save(checkpoint_step, {"w": jnp.zeros(2)}, run_record.RunRecord())
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


# --- Divergence: a non-finite state never reaches a checkpoint ---------------------------------

def test_divergence_never_reaches_a_checkpoint_and_a_rerun_resumes_from_a_finite_one(
        tmp_path, capsys):
    config = tiny_config()
    config.synthetic_train_size, config.synthetic_test_size = 64, 32
    config.eval.update(every_epochs=0, at_init=False)
    config.log_every_steps, config.checkpoint_every_steps, config.progress_bar = 1, 1, False
    config.optim.lr = 1e6
    with pytest.raises(DivergenceError, match=r"diverged at step (\d+).*Lower --config.optim.lr"):
        train.run(config, str(tmp_path))
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved, "the run diverged before its first checkpoint: nothing is tested"
    for step in saved:  # every checkpoint written is finite
        _, state, _ = experiment.restore(str(tmp_path), step)
        arrays = jax.device_get((state.params, state.batch_stats, state.opt_state))
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(arrays)), step
    capsys.readouterr()
    config.optim.lr = 0.1  # the message's advice: the rerun starts from the last finite state
    try:  # lr 1e6 leaves that state finite but huge, so it may diverge again (the same error)
        train.run(config, str(tmp_path))
    except DivergenceError:
        pass
    assert f"at step {saved[-1]}" in capsys.readouterr().out
