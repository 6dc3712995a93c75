"""Runs that live in a bucket (`--workdir gs://...`), against a GCS emulator on localhost
(conftest's `gcs` fixture; tests/gcs_emulator.py): the path layer's guarantees (create-if-absent,
metrics parts folded in order, one-line errors); a launch.py run that refuses a second launch, is
SIGKILLed and preempted with SIGTERM, and then matches an uninterrupted local run step for step; a
damaged newest checkpoint; evaluate / report / export reading a run from the bucket; an image
folder and a prepared ArrayRecord dataset read from it; and the 2-process multi-host run with its
workdir and data in the bucket."""
import json
import os
import random
import re
import signal
import socket
import time

import numpy as np
import pytest
import test_launch
import test_multihost
from runs import tiny_run
from test_launch import RESUME_ARGS, launch
from test_multihost import RUN, finish, kill_when, start
from test_reliability import _dead_pid, _diverging_config
from test_report import _tensorboard_scalars

from effssl_jax import export, report, run_log, storage, train, workdir_lock
from effssl_jax.errors import UserError
from effssl_jax.evaluate import offline as evaluate
from effssl_jax.run_log import MetricsLog, _fold

# The local references, made once per session (conftest.made_once) for test_launch and
# test_multihost as well: an uninterrupted 16-step run, and the 1 x 8-device multi-host run.
uninterrupted, runs = test_launch.uninterrupted, test_multihost.runs


@pytest.fixture(scope="module")
def bucket(gcs, worker_id):
    """A fresh bucket of the session's emulator for this module (one per xdist worker)."""
    return gcs.create_bucket(f"runs-{worker_id}")


def _wait(condition, proc, what: str, timeout: float = 600):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None and time.time() < deadline, f"the run ended before {what}"
        time.sleep(0.05)


def _losses(workdir) -> dict[int, float]:
    steps = [(m["step"], m["loss"]) for m in run_log.read_metrics(workdir) if "loss" in m]
    assert [s for s, _ in steps] == sorted({s for s, _ in steps}), "a step logged twice"
    return dict(steps)


# --- The path layer ----------------------------------------------------------------------------


def test_create_is_create_if_absent_and_whole_writes_replace(bucket):
    path = f"{bucket}/layer/once"
    assert storage.create(path, "first") and not storage.create(path, "second")
    assert storage.read_text(path) == "first"
    storage.write_text(path, "third")
    assert storage.read_text(path) == "third" and storage.exists(path)
    storage.remove(path)
    assert not storage.exists(path) and storage.create(path, "again")


def test_metrics_parts_fold_in_order_dropping_what_a_resume_redoes():
    line = lambda *steps: "".join(json.dumps({"step": s}) + "\n" for s in steps)
    parts = [("000001-000000000004-00000000.jsonl", line(5, 6)),  # resumed from 4
             ("000000-000000000000-00000001.jsonl", line(4, 5, 6, 7)),  # died after 7
             ("000000-000000000000-00000000.jsonl", line(1, 2, 3)),
             ("000002-000000000000-00000000.jsonl", line(1)),  # started afresh
             ("000001-000000000004-00000001.jsonl", line(7))]
    assert [r["step"] for r in _fold(parts[:3] + parts[4:])] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["step"] for r in _fold(parts)] == [1]


def test_a_crash_loses_only_the_metrics_since_the_last_flush(bucket):
    workdir = f"{bucket}/metrics"
    log = MetricsLog(workdir)
    for step in (1, 2):
        log.write({"step": step, "loss": 1.0 / step})
    log.flush()
    log.write({"step": 3, "loss": 0.3})  # never flushed: the process dies here
    assert [r["step"] for r in run_log.read_metrics(workdir)] == [1, 2]
    resumed = MetricsLog(workdir, resume_step=1)  # its last checkpoint was step 1
    resumed.write({"step": 2, "loss": 0.4})
    resumed.close()
    assert run_log.read_metrics(workdir) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.4}]
    assert not storage.exists(f"{workdir}/metrics.jsonl")  # no object is rewritten
    assert run_log.read_metrics(f"{bucket}/no-run") == []


def test_lock_in_a_bucket_refuses_a_live_holder_and_takes_over_a_dead_one(bucket):
    workdir = f"{bucket}/locked"
    live = {"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}
    storage.write_text(f"{workdir}/.lock", json.dumps(live))
    with pytest.raises(UserError, match=f"in use by pid {os.getpid()}"):
        workdir_lock.acquire(workdir)
    storage.write_text(f"{workdir}/.lock", json.dumps({**live, "pid": _dead_pid()}))
    with workdir_lock.hold(workdir):
        assert json.loads(storage.read_text(f"{workdir}/.lock"))["pid"] == os.getpid()
        with pytest.raises(UserError, match="in use by pid"):
            workdir_lock.acquire(workdir)
    assert not storage.exists(f"{workdir}/.lock")


def test_a_missing_bucket_is_one_line(gcs, tmp_path):
    r = launch("gs://no-such-bucket/run", "--config.epochs=1")
    errors = [s for s in r.stderr.splitlines() if s.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "bucket gs://no-such-bucket does not exist" in errors[0] and "create it" in errors[0]


@pytest.mark.parametrize("raised, named", [
    (OSError("Forbidden: b/runs/o\nno storage.objects.create access"), "no permission to write"),
    (type("HttpError", (Exception,), {"code": 401})("Anonymous caller"), "no credentials to write"),
    (type("DefaultCredentialsError", (Exception,), {})("not found"), "no credentials to write"),
])
def test_refused_requests_are_one_line_naming_the_fix(monkeypatch, raised, named):
    class Refusing:
        def pipe_file(self, *args, **kwargs):
            raise raised

    monkeypatch.setattr(storage, "_fs", lambda path: (Refusing(), path))
    with pytest.raises(storage.StorageError) as e:
        storage.write_text("gs://runs/run/config.json", "{}")
    assert str(e.value).startswith(f"{named} gs://runs/run/config.json")
    assert "\n" not in str(e.value)


# --- A launch.py run in the bucket: refused twin, SIGKILL, SIGTERM, exact resume ---------------


def test_a_bucket_run_refuses_a_twin_and_resumes_exactly_after_sigkill_and_sigterm(
        bucket, uninterrupted):
    """A 16-step launch.py run in the bucket, stopped (SIGSTOP) once its step-4 checkpoint is
    committed while a second launch on the same workdir is refused, then SIGKILLed; resumed and
    preempted (SIGTERM) at a random step past 8; resumed again to the end: its losses are the
    uninterrupted local run's, step for step. (One test, not several over a module fixture: under
    xdist each worker has its own emulator, and would make the run again.)"""
    from effssl_jax.preemption import EXIT_PREEMPTED
    workdir = f"{bucket}/interrupted"
    first = launch(workdir, *RESUME_ARGS, wait=False)
    try:
        _wait(lambda: storage.exists(f"{workdir}/checkpoints/4/commit_success.txt"), first,
              "its step-4 checkpoint")
        first.send_signal(signal.SIGSTOP)
        refused = launch(workdir, *RESUME_ARGS)
        assert json.loads(storage.read_text(f"{workdir}/.lock"))["pid"] == first.pid
    finally:
        first.kill()
        first.wait()
    errors = [s for s in refused.stderr.splitlines() if s.startswith("error:")]
    assert refused.returncode == 2 and len(errors) == 1, refused.stderr[-3000:]
    assert f"in use by pid {first.pid} on {socket.gethostname()}" in errors[0]

    # Past the step-8 checkpoint, and five steps before the end: a SIGTERM that arrives after the
    # last step would find the run finished (exit 0).
    at = random.Random().choice([9, 10, 11])
    second = launch(workdir, *RESUME_ARGS, wait=False)
    try:
        _wait(lambda: any(s >= at for s in _losses(workdir)), second, f"step {at}")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=120) == EXIT_PREEMPTED
    finally:
        second.kill()
        second.wait()
    last = launch(workdir, *RESUME_ARGS)
    assert last.returncode == 0, last.stderr[-3000:]
    assert int(last.stdout.split(" at step ")[1].split()[0]) >= at  # SIGTERM saved its step

    reference, summary = uninterrupted
    assert _losses(workdir) == reference  # steps 1..16, each once, every loss equal
    assert json.loads(storage.read_text(f"{workdir}/summary.json"))["knn_top1"] == \
        summary["knn_top1"]
    assert not storage.exists(f"{workdir}/.lock") and storage.exists(f"{workdir}/config.json")
    # TensorBoard: the killed run's events were never flushed (docs/multi_host.md: up to 2
    # minutes lost); the resumed runs' curves are there, equal to the reference.
    tensorboard = _tensorboard_scalars_in(workdir)["loss"]
    assert 16 in tensorboard
    assert tensorboard == pytest.approx({step: reference[step] for step in tensorboard})


def _tensorboard_scalars_in(workdir) -> dict:
    """test_report's reader over a local copy of the bucket's event files."""
    import tempfile
    local = tempfile.mkdtemp()
    os.makedirs(os.path.join(local, "tensorboard"))
    for name in storage.listdir(f"{workdir}/tensorboard"):
        with open(os.path.join(local, "tensorboard", name), "wb") as f:
            f.write(storage.read_bytes(f"{workdir}/tensorboard/{name}"))
    return _tensorboard_scalars(local)


def test_evaluate_report_and_export_read_a_run_from_the_bucket(bucket):
    workdir = tiny_run(f"{bucket}/finished", epochs=1)
    summary = json.loads(storage.read_text(f"{workdir}/summary.json"))
    record = evaluate.main(["--workdir", workdir, "--protocol", "knn"])
    assert record["checkpoint_step"] == summary["steps"] == 4
    assert record["knn"][0]["top1"] == pytest.approx(summary["knn_top1"])
    assert [r["checkpoint_step"] for r in json.loads(storage.read_text(
        f"{workdir}/eval.json"))] == [4]
    out = f"{bucket}/report"
    rows = report.main([workdir, "--out", out])
    assert rows[0]["run"] == "finished"
    assert float(rows[0]["knn_offline_top1_%"]) == pytest.approx(100 * record["knn"][0]["top1"],
                                                                 abs=0.01)
    assert "| finished |" in storage.read_text(f"{out}/results.md")
    assert storage.read_bytes(f"{out}/knn_vs_cost.png").startswith(b"\x89PNG")
    meta = export.main(["--workdir", workdir, "--out", f"{out}/backbone.npz"])
    assert meta["checkpoint_step"] == 4 and meta["workdir"] == workdir
    import io
    npz = np.load(io.BytesIO(storage.read_bytes(f"{out}/backbone.npz")))
    assert "conv1.weight" in npz.files
    assert json.loads(storage.read_text(f"{out}/backbone.json")) == meta


# --- A damaged newest checkpoint in the bucket -------------------------------------------------


def test_a_damaged_newest_checkpoint_in_the_bucket_falls_back(bucket, tmp_path, capsys):
    """test_reliability's truncated-checkpoint test with the run in the bucket: checkpoints 2 and
    4, the objects of 4's arrays cut in half; the rerun resumes from 2, sets 4 aside and ends
    equal to an uninterrupted local run."""
    def config():
        c = _diverging_config(lr=0.1)
        c.log_every_steps, c.checkpoint_every_steps, c.checkpoint_every_minutes = 2, 10**6, 1e-9
        return c

    train.run(config(), str(tmp_path / "full"))
    reference = _losses(str(tmp_path / "full"))
    wd = f"{bucket}/damaged"
    train.run(config(), wd, stop=lambda record: record["step"] > 5)
    assert [n for n in storage.listdir(f"{wd}/checkpoints") if n.isdigit()] == ["2", "4"]
    damaged = [f for f in storage.files_under(f"{wd}/checkpoints/4/state")
               if f.startswith("d/") or "/d/" in f]
    for f in damaged:
        data = storage.read_bytes(f"{wd}/checkpoints/4/state/{f}")
        storage.write_bytes(f"{wd}/checkpoints/4/state/{f}", data[: len(data) // 2])
    capsys.readouterr()
    summary = train.run(config(), wd)
    out = capsys.readouterr().out
    assert re.search(r"^warning: checkpoint 4 \(.*\) cannot be restored; moved to gs://.*, "
                     r"resuming from checkpoint 2$", out, re.M), out
    assert out.count("cannot be restored") == 1
    assert storage.isdir(f"{wd}/checkpoints_damaged/4") and damaged
    assert summary["steps"] == 8 and _losses(wd) == reference


# --- Data and the multi-host run in the bucket -------------------------------------------------


def _upload(local, remote) -> None:
    for root, _, files in os.walk(local):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, local).replace(os.sep, "/")
            with open(path, "rb") as f:
                storage.write_bytes(f"{remote}/{rel}", f.read())


def test_an_image_folder_in_the_bucket_reads_as_the_local_one(bucket, image_folder):
    from effssl_jax.data import folder
    local = image_folder()
    _upload(local, f"{bucket}/images")
    for split in ("train", "val"):
        paths, labels, classes = folder.scan_folder(f"{bucket}/images/{split}")
        local_paths, local_labels, local_classes = folder.scan_folder(str(local / split))
        assert [p.split(f"/images/{split}/")[1] for p in paths] == \
            [os.path.relpath(p, local / split) for p in local_paths]
        assert classes == local_classes and labels.tolist() == local_labels.tolist()
        for p, q in zip(paths, local_paths):
            np.testing.assert_array_equal(folder.decode_image(p, 16), folder.decode_image(q, 16))


def test_a_prepared_arrayrecord_dataset_in_the_bucket_reads_as_the_local_one(bucket, image_folder,
                                                                           tmp_path):
    """A folder packed by effssl_jax.data.prepare (TFDS's ArrayRecord layout, what TFDS datasets
    are) read from the bucket: TFDS finds it through epath, array_record reads the shards with
    its own GCS client (CLOUD_STORAGE_EMULATOR_ENDPOINT points it at the emulator)."""
    from effssl_jax import config_schema
    from effssl_jax.data import prepare, sources
    prepare.prepare(str(image_folder()), str(tmp_path / "packed"), progress=False)
    _upload(tmp_path / "packed", f"{bucket}/packed")
    for role in ("train", "eval"):
        opened = []
        for where in (str(tmp_path / "packed"), f"{bucket}/packed"):
            config = config_schema.default_config()
            config.dataset = f"folder:{where}"
            opened.append(sources.open_source(config, role))
        local, remote = opened
        assert isinstance(remote, sources.TfdsSource) and len(remote) == len(local) > 0
        assert remote.class_names == local.class_names
        indices = list(range(len(local)))
        assert remote.read(indices) == local.read(indices)


def test_two_processes_train_in_the_bucket_as_one_process_locally(bucket, runs, image_folder,
                                                                  tmp_path):
    """test_multihost's 2 x 4-device run with its workdir and its image folder in the bucket,
    killed after its step-2 checkpoint and started again: its losses equal the local 1 x 8 run's
    (the same tolerance as there: float64 rounding of reductions in another order)."""
    root, _ = runs
    data = f"{bucket}/multihost-images"
    _upload(image_folder(per_class=32), data)
    workdir = f"{bucket}/multihost"
    train_cmd = ["launch.py", *RUN, f"--config.dataset=folder:{data}", f"--workdir={workdir}"]
    procs = start(train_cmd, tmp_path / "killed")
    kill_when(procs, lambda: storage.exists(f"{workdir}/checkpoints/2/commit_success.txt"))
    logs = finish(start(train_cmd, tmp_path / "resumed"), tmp_path / "resumed")
    assert "at step 2" in logs[0] and "summary:" in logs[0] and "summary:" not in logs[1]
    reference = _losses(str(root / "one"))
    resumed = _losses(workdir)
    assert sorted(resumed) == sorted(reference) == [1, 2, 3, 4]
    for step, loss in resumed.items():
        assert loss == pytest.approx(reference[step], rel=1e-10, abs=1e-13), step
    assert json.loads(storage.read_text(f"{workdir}/summary.json"))["knn_top1"] == \
        json.loads((root / "one" / "summary.json").read_text())["knn_top1"]

