"""The training loop, as the paper's Algorithm 1: at each step the plan gives the learning rate and
momentum (F1-CLR, inside the optimizer), the resolution r_t and the augmentation magnitude m_t
(Super Progressive Learning); the bucket's compiled step augments on the device, picks the
hardest pair (Hard Augment) and updates the state. Logging, evaluation and checkpoints are
named cadences around it (`_Cadences`), each after the metrics fetched from the device have
passed the health checks (health.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from effssl_jax import (
    checkpoint,
    config_schema,
    costs,
    experiment,
    health,
    methods,
    preemption,
    provenance,
    run_log,
    run_record,
    storage,
    workdir_lock,
)
from effssl_jax import plan as plan_lib
from effssl_jax.compile import enable_persistent_cache
from effssl_jax.data import decode, pipeline
from effssl_jax.errors import ConfigError
from effssl_jax.evaluate.online import OnlineKnn
from effssl_jax.step import data_mesh


def _every(steps: int, done: int, total: int) -> bool:
    """A cadence: every `steps` steps and at the end; never if steps <= 0."""
    return steps > 0 and (done % steps == 0 or done == total)


def _eval_due(config, plan, done: int) -> bool:
    """Whether the kNN monitor runs after `done` steps: at the step nearest each multiple of
    eval.every_epochs, and at the end; never if every_epochs is 0 (e.g. the LR range test).

    Multiples of the epoch interval, not of a rounded step interval: 2.5 epochs of 73 steps
    evaluate at 182 and 365, not at 182, 364 and again at the end (365)."""
    if config.eval.every_epochs <= 0:
        return False
    if done == plan.total_steps:
        return True
    interval = config.eval.every_epochs * plan.steps_per_epoch
    nearest = max(round(done / interval), 1)  # the multiple of the interval closest to `done`
    return done == max(round(nearest * interval), 1)


def _finished(config, workdir: str) -> dict | None:
    """The summary of a run that has already finished in `workdir` with this config (summary.json
    and the latest checkpoint both at the last step of the plan that the run made for its dataset
    size, read from that checkpoint), else None. Decided before any JAX work or data decoding."""
    if not storage.exists(storage.join(workdir, "summary.json")):
        return None
    try:
        summary = run_log.read_summary(workdir)
    except ValueError:  # unreadable: train (resume) and write it again
        return None
    ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
    try:
        latest = ckpt.latest_step
        record = ckpt.read_record() if latest == summary.get("steps") else None
    except Exception:  # noqa: BLE001 - a damaged checkpoint: training restores the one before
        record = None
    finally:
        ckpt.close()
    if record is None or record.num_examples is None:  # (None: saved before runs recorded it)
        return None
    finished = plan_lib.make_plan(config, record.num_examples).total_steps == latest
    return summary if finished else None


def _summary_line(summary: dict) -> str:
    return ", ".join(f"{k}={summary[k]}" for k in
                     ("knn_top1_init", "knn_top1", "total_pflops", "wall_clock_s"))


def _prepare(config, workdir: str):
    """Opens the run's (validated) data, builds its experiment and its cost forecast; prints the
    plan. config.json is written once both have worked (a run refused for its data leaves no
    config behind)."""
    mesh, main = data_mesh(), jax.process_index() == 0
    size = experiment.host_size(config, methods.view_configs(config), config.progressive.r_max)
    eval_res = experiment.eval_resolution(config)
    enable_persistent_cache(workdir)
    kept = (f"whole images, shorter side up to {size.short} px" if pipeline.in_memory(config)
            else "streamed")
    with run_log.phase(f"opening the data ({config.dataset}: {kept}; evaluation crops at "
                       f"{eval_res} px)", main):
        train_data, bank, eval_split = pipeline.open_run_data(config, size, eval_res)
    with run_log.phase("building the model and counting the plan's cost", main):
        exp = experiment.build(config, len(train_data), mesh)
        forecast = costs.forecast(config, exp.plan)
    described = f"{exp.plan.describe()}\n{forecast.describe()}"
    if main:
        storage.write_text(storage.join(workdir, "config.json"),
                           config.to_json_best_effort(indent=2))
        print(described, flush=True)
    logging.info("plan:\n%s", described)
    return exp, forecast, train_data, bank, eval_split


def _resume_changes(config, workdir: str, ckpt) -> dict:
    """The config keys changed since the checkpointed run (refused if they cannot change); printed
    and, by the caller, logged. {} when starting from scratch."""
    if ckpt.latest_step is None:
        return {}
    changes = config_schema.resume_changes(workdir, config)
    if changes and jax.process_index() == 0:
        print("resuming with a changed config: " + ", ".join(
            f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()), flush=True)
    return changes


def _agreed(flag: bool) -> bool:
    """Process 0's `flag` on every process (a cadence that must be the same everywhere)."""
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


@dataclasses.dataclass(frozen=True)
class _Due:
    """What a step's cadences ask for after it."""
    log: bool  # fetch, check and log the metrics of the steps since the last fetch
    eval: bool  # the kNN monitor
    checkpoint: bool

    @property
    def fetch(self) -> bool:
        """Every cadence starts from the fetched, checked metrics: a diverged state is never
        evaluated or saved."""
        return self.log or self.eval or self.checkpoint


class _Cadences:
    """When to log, evaluate and checkpoint: log and checkpoint every so many steps, the kNN
    monitor every so many epochs (_eval_due), a checkpoint also every so many minutes (decided by
    process 0 at the log cadence) and when a signal asks for one."""

    def __init__(self, config, plan):
        self._config, self._plan = config, plan
        self._saved_at = time.monotonic()

    def due(self, done: int, preempted: bool) -> _Due:
        total = self._plan.total_steps
        log = _every(self._config.log_every_steps, done, total)
        return _Due(log, _eval_due(self._config, self._plan, done),
                    preempted or self._checkpoint_due(done, log))

    def _checkpoint_due(self, done: int, log: bool) -> bool:
        if _every(self._config.checkpoint_every_steps, done, self._plan.total_steps):
            return True
        minutes = self._config.checkpoint_every_minutes
        return minutes > 0 and log and _agreed(time.monotonic() - self._saved_at >= 60 * minutes)

    def saved(self) -> None:
        self._saved_at = time.monotonic()


class _Stopped(Exception):
    """The caller's `stop` (the LR range test's) asked to end the run."""


@dataclasses.dataclass
class _Run:
    """What the loop works with, built once by `_start`."""
    config: Any
    workdir: str
    exp: experiment.Experiment
    forecast: costs.Forecast
    ckpt: checkpoint.Checkpointer
    steps: Any  # compile.CompiledSteps
    loader: Any  # yields (step, the step's global canvas.Images)
    knn: OnlineKnn
    log: run_log.RunLog
    health: health.Health
    stop: Callable[[dict], bool] | None
    record: run_record.RunRecord
    clock: run_record.Stopwatch
    cadences: _Cadences
    main: bool

    def spec(self, step: int):
        """The compiled step's static description at `step`: the plan's resolution r_t on the
        loader's canvas."""
        return self.exp.spec(self.exp.plan.resolution(step), self.loader.canvas(step))

    @contextlib.contextmanager
    def outside_training(self, clock_field: str):
        """Time spent here counts as `clock_field`, not as training (nor in images/s)."""
        with self.log.paused(), self.clock.excluded(clock_field):
            yield

    def close(self) -> None:
        """Stops the compile thread, the loader and the log."""
        self.steps.close()
        self.loader.close()
        self.log.close()


def run(config, workdir: str, stop=None) -> dict:
    """Trains (resuming from WORKDIR/checkpoints if present); returns the summary dict. Holds
    WORKDIR/.lock throughout (one run per workdir); a run that has finished is not run again.
    SIGTERM/SIGINT save a checkpoint and raise preemption.Preempted (preemption.py).
    stop: optional callable(metrics record) -> bool that ends the run early (LR range test)."""
    config_schema.validate(config, num_devices=data_mesh().devices.size)
    try:
        storage.makedirs(workdir)
    except OSError as e:
        raise ConfigError(f"cannot use --workdir {workdir}: {e.strerror or e}; give a directory "
                          "that can be created and written") from e
    with workdir_lock.hold(workdir, enabled=jax.process_index() == 0):
        if stop is None and (summary := _finished(config, workdir)) is not None:
            if jax.process_index() == 0:
                print(f"finished already: {_summary_line(summary)}", flush=True)
            return summary
        return _train(config, workdir, stop)


def _train(config, workdir: str, stop=None) -> dict:
    """The body of `run`, with the workdir locked: Algorithm 1 with its cadences."""
    run, state = _start(config, workdir, stop)
    with preemption.StopSignals() as signals, _closing(run), contextlib.suppress(_Stopped):
        for step, images in run.loader:
            state, done = _step(run, state, step, images), step + 1
            preempted = signals.requested(done)
            due = run.cadences.due(done, preempted)
            if due.log:
                run.ckpt.check()  # a failed write ends the run now, not at the next save
            if due.fetch:
                _check_metrics(run)
            if due.eval:
                _evaluate(run, state, done)
            if due.checkpoint:
                _save(run, state, done)
            if preempted:
                run.ckpt.wait()
                raise preemption.Preempted(done, signals.signame)
    run.clock.tick()
    return _write_summary(run)


def _step(run: _Run, state, step: int, images):
    """One step of Algorithm 1: the plan's resolution r_t and magnitude m_t (lr and momentum come
    from the plan inside the optimizer), the bucket's compiled step, dispatched without waiting
    for it; the next bucket's step compiles meanwhile."""
    plan, spec, magnitude = run.exp.plan, run.spec(step), run.exp.plan.magnitude(step)
    with run.outside_training("compile_s"), run_log.phase(
            f"compiling the train step at {spec.resolution} px",
            run.main and not run.steps.ready(spec)):
        compiled = run.steps.get(spec)  # waits only if XLA has not finished it yet
    state, metrics = compiled(state, images, np.float32(magnitude))  # async dispatch
    if (next_bucket := plan.stage(step).end) < plan.total_steps:
        run.steps.prefetch(run.spec(next_bucket))  # compiled while this bucket trains
    run.record.add_step(spec.resolution, run.steps.flops[spec], run.steps.selection_flops[spec])
    run.log.add(step + 1, plan, spec.resolution, magnitude, metrics, run.config.batch_size)
    return state


def _check_metrics(run: _Run) -> None:
    """Fetches the metrics of the steps since the last fetch and, step by step, asks the caller's
    `stop` (raises _Stopped) and the health checks (raise DivergenceError) before logging them."""
    for record in run.log.fetch():
        if run.stop is not None and run.stop(record):
            raise _Stopped
        run.health.check(record)
        run.log.write(record)
    run.log.flush()


def _evaluate(run: _Run, state, done: int) -> None:
    with run.outside_training("eval_s"):
        run.record.knn_top1 = run.knn(state)
    run.record.eval_flops += run.knn.flops
    run.clock.tick()
    run.log.knn(done, run.exp.plan, run.record)


def _save(run: _Run, state, done: int) -> None:
    with run.outside_training("checkpoint_s"):
        run.clock.tick()
        run.record.data_iterator = run.loader.state()
        run.ckpt.save(done, state, run.record)
    run.health.last_checkpoint = done
    run.cadences.saved()


@contextlib.contextmanager
def _closing(run: _Run):
    """Closes the run's threads however the loop ends, and waits for the last checkpoint write:
    its failure is raised, unless the loop failed first (then the loop's failure is)."""
    try:
        yield
    except BaseException:
        run.close()
        with contextlib.suppress(Exception):
            run.ckpt.wait()
        raise
    run.close()
    run.ckpt.wait()
    run.ckpt.close()


def _start(config, workdir: str, stop) -> tuple[_Run, Any]:
    """Everything the loop needs, and the state it starts from: restored from the newest
    checkpoint that restores, else initialised; the kNN at initialisation when starting."""
    ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
    changes = _resume_changes(config, workdir, ckpt)
    exp, forecast, train_data, bank, eval_split = _prepare(config, workdir)
    plan, main = exp.plan, jax.process_index() == 0
    if ckpt.latest_step is not None:
        state, record = ckpt.restore_newest(exp.abstract_state)
        if main:
            print(f"resumed from {ckpt.directory} at step {int(state.step)}", flush=True)
    else:
        state, record = exp.init(jax.random.key(config.seed)), run_record.RunRecord()
    record.num_examples = plan.num_examples  # what _finished and experiment.restore plan with
    start = int(state.step)
    if main:
        provenance.record(workdir, start)
    steps = exp.compiled_steps()
    loader = pipeline.make_loader(config, train_data, plan, exp.mesh, exp.host_size,
                                  jax.process_index(), jax.process_count())
    if start < plan.total_steps:  # XLA compiles it while the kNN monitor compiles and runs
        steps.prefetch(exp.spec(plan.resolution(start), loader.canvas(start)))
    with run_log.phase("compiling the kNN monitor", main):
        knn = OnlineKnn(exp, bank, eval_split)
    log = run_log.RunLog(workdir, start, plan.total_steps, config, main)
    if changes:
        log.write({"step": start, "config_change": {k: list(v) for k, v in changes.items()}})
    if start == 0 and config.eval.at_init:
        with run_log.phase(f"kNN at initialisation ({len(bank)} bank, {len(eval_split)} query "
                           "images)", main):
            record.knn_top1_init = record.knn_top1 = knn(state)
        record.eval_flops += knn.flops
        log.knn(0, plan, record)
    clock = run_record.Stopwatch(record)  # from here on: the initial kNN is not training time
    loader.restore(start, record.data_iterator)
    return _Run(config, workdir, exp, forecast, ckpt, steps, loader, knn, log,
                health.Health(config.optim, start or None), stop, record, clock,
                _Cadences(config, plan), main), state


def _write_summary(run: _Run) -> dict:
    config = run.config
    baseline = run_log.read_summary(config.compare_to) if config.compare_to else None
    cost = costs.run_cost(run.exp.plan, run.record, run.forecast, run.steps, baseline,
                          config.compare_to)
    summary = run_record.summary(config, run.exp.plan, run.record, cost, len(decode.SKIPPED))
    if run.main:
        run_log.write_json(storage.join(run.workdir, "summary.json"), summary)
        print(f"summary: {_summary_line(summary)}", flush=True)
    return summary
