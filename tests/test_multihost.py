"""Two processes x 4 CPU devices through jax.distributed on localhost, started with the command of
docs/multi_host.md: they train as one process with 8 devices does, resume after both are killed,
and evaluate to the same kNN, with process 0 alone writing the logs.

The runs are in float64 (`--config.dtype=float64`): in float32 a few steps of this tiny SimSiam
amplify the rounding of reductions done in another order (8 devices in one process against 2 x 4)
into losses far apart, which would hide a real difference. In float64 the layouts agree to float64
rounding (docs/multi_host.md has the figures), so the tolerance below (1e-10 relative) admits
rounding only, while a wrong shard, a lost optimizer state or a resumed data order moves the loss
by orders of magnitude more."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import COMPILE_FAST, made_once
from test_launch import TINY, metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = [*TINY, "--config.dtype=float64", "--config.epochs=2", "--config.log_every_steps=1",
       "--config.checkpoint_every_steps=2", "--config.eval.every_epochs=1",
       "--config.data.threads=2"]  # 64 images, batch 32: 2 steps an epoch, 4 in all


def _env(devices: int) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {COMPILE_FAST}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start(command: list[str], log_prefix, processes: int = 2, devices: int = 4):
    """`command` as `processes` local processes with `devices` CPU devices each (the documented
    plain-hosts command: --distributed --coordinator_address --num_processes --process_id);
    process I's output goes to LOG_PREFIX.I."""
    port = _free_port()
    return [subprocess.Popen(
        [sys.executable, *command, "--distributed", f"--coordinator_address=localhost:{port}",
         f"--num_processes={processes}", f"--process_id={i}"],
        cwd=ROOT, env=_env(devices), stdout=open(f"{log_prefix}.{i}", "w"),
        stderr=subprocess.STDOUT, text=True) for i in range(processes)]


def kill_when(procs, saved, timeout=600) -> None:
    """SIGKILLs every process as soon as `saved()` (a checkpoint is committed), asserting that
    none has ended before."""
    deadline = time.time() + timeout
    while not saved():
        assert all(p.poll() is None for p in procs) and time.time() < deadline, \
            "the run ended before its step-2 checkpoint"
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()


def finish(procs, log_prefix, timeout=600):
    codes = [p.wait(timeout=timeout) for p in procs]
    logs = [open(f"{log_prefix}.{i}").read() for i in range(len(procs))]
    assert codes == [0] * len(procs), "\n".join(log[-3000:] for log in logs)
    return logs


@pytest.fixture(scope="session")
def runs(tmp_path_factory, worker_id, image_folder):
    """(folder, {name: logs}): the run of 1 process x 8 devices ('one'), and of 2 x 4 that was
    killed after its step-2 checkpoint and started again ('two'), on conftest's image_folder of
    2 classes x 32 generated JPEGs a split; then the offline evaluation of 'two' by 2 x 4
    processes."""
    def make(root):
        data = image_folder(per_class=32)
        train = ["launch.py", *RUN, f"--config.dataset=folder:{data}"]
        logs = {}
        one = subprocess.run([sys.executable, *train, f"--workdir={root / 'one'}"], cwd=ROOT,
                             env=_env(8), capture_output=True, text=True, timeout=600)
        assert one.returncode == 0, one.stderr[-3000:]
        procs = start([*train, f"--workdir={root / 'two'}"], root / "killed")
        kill_when(procs, (root / "two" / "checkpoints" / "2").exists)
        logs["two"] = finish(start([*train, f"--workdir={root / 'two'}"], root / "two"),
                             root / "two")
        evaluate = ["-m", "effssl_jax.evaluate", "--protocol=knn", f"--workdir={root / 'two'}"]
        logs["two_eval"] = finish(start(evaluate, root / "two_eval"), root / "two_eval")
        (root / "logs.json").write_text(json.dumps(logs))
    root = made_once(tmp_path_factory, worker_id, "multihost", make)
    return root, json.loads((root / "logs.json").read_text())


def test_two_processes_resumed_train_as_one_process_with_eight_devices(runs):
    root, logs = runs
    one, two = metrics(root / "one"), metrics(root / "two")
    # Each step logged once, by process 0, across the kill and the restart.
    assert [m["step"] for m in two if "loss" in m] == list(range(1, 5))
    reference = {m["step"]: m["loss"] for m in one if "loss" in m}
    for m in (m for m in two if "loss" in m):
        assert m["loss"] == pytest.approx(reference[m["step"]], rel=1e-10, abs=1e-13), m["step"]
    assert "resumed from" in logs["two"][0] and "at step 2" in logs["two"][0]
    # The online kNN (features streamed from each host's share of the splits) at initialisation
    # and after each epoch.
    knn = lambda ms: [(m["step"], m["knn_top1"]) for m in ms if "knn_top1" in m]
    assert knn(two) == knn(one) and len(knn(one)) == 3
    summary = json.loads((root / "two" / "summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["knn_top1"] == json.loads((root / "one" / "summary.json").read_text())[
        "knn_top1"]


def test_process_zero_alone_reports(runs):
    root, logs = runs
    zero, one = logs["two"]
    assert "epoch 2: kNN top-1" in zero and "summary:" in zero
    for line in ("workdir:", "kNN", "summary:", "compiling", "resumed"):
        assert line not in one, line
    assert logs["two_eval"][1].count("kNN k=") == 0


def test_two_processes_evaluate_as_one(runs):
    """The offline kNN of the 2 x 4 run (each host streams its share of both splits) gives the
    single-process run's last online kNN (the same bank, queries, k and temperature)."""
    root, logs = runs
    records = json.loads((root / "two" / "eval.json").read_text())
    assert len(records) == 1  # written once, by process 0
    assert records[0]["num_train"] == records[0]["num_eval"] == 64
    one = json.loads((root / "one" / "summary.json").read_text())
    assert records[0]["knn"][0]["top1"] == one["knn_top1"]
    assert logs["two_eval"][0].count("kNN k=") == len(records[0]["knn"])
