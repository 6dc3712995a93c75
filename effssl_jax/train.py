"""The training loop, as the paper's Algorithm 1: at each step the plan gives the learning rate and
momentum (F1-CLR, inside the optimizer), the resolution r_t and the augmentation magnitude m_t
(Super Progressive Learning); the bucket's compiled step augments on the device, picks the
hardest pair (Hard Augment) and updates the state. Logging, evaluation and checkpoints are
cadences around it.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from effssl_jax import (
    checkpoint,
    config_schema,
    costs,
    experiment,
    methods,
    preemption,
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
    """The summary of a run that has already finished in `workdir` with this plan (summary.json and
    the latest checkpoint both at the plan's last step), else None. Decided before any JAX work."""
    if not storage.exists(storage.join(workdir, "summary.json")):
        return None
    try:
        summary = run_log.read_summary(workdir)
    except ValueError:  # unreadable: train (resume) and write it again
        return None
    total = plan_lib.make_plan(config, pipeline.num_train_examples(config)).total_steps
    if summary.get("steps") != total:
        return None
    ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
    try:
        return summary if ckpt.latest_step == total else None
    finally:
        ckpt.close()


def _summary_line(summary: dict) -> str:
    return ", ".join(f"{k}={summary[k]}" for k in
                     ("knn_top1_init", "knn_top1", "total_pflops", "wall_clock_s"))


def _prepare(config, workdir: str):
    """Opens the run's (validated) data and builds its experiment; prints the plan. config.json is
    written once both have worked (a run refused for its data leaves no config behind)."""
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
        paper_cost = costs.PaperCost(config)
        pflops = paper_cost.pflops(exp.plan.steps_by_resolution(), exp.plan)
    described = (f"{exp.plan.describe()}\ntraining cost in the paper's convention (costs.py): "
                 f"{pflops:.4g} PFLOPs")
    if main:
        storage.write_text(storage.join(workdir, "config.json"),
                           config.to_json_best_effort(indent=2))
        print(described, flush=True)
    logging.info("plan:\n%s", described)
    return exp, paper_cost, train_data, bank, eval_split


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


def _write_summary(workdir: str, exp, paper_cost, record, steps, step: int) -> dict:
    config = exp.config
    summary = run_record.summary(
        config, exp.plan, record, {str(s.resolution): f / 1e9 for s, f in steps.flops.items()},
        step, steps.compile_count, len(decode.SKIPPED),
        paper_cost.pflops(record.steps_by_resolution, exp.plan),
        run_log.read_summary(config.compare_to) if config.compare_to else None)
    if jax.process_index() == 0:
        run_log.write_json(storage.join(workdir, "summary.json"), summary)
        print(f"summary: {_summary_line(summary)}", flush=True)
    return summary


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
    """The body of `run`, with the workdir locked."""
    ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
    changes = _resume_changes(config, workdir, ckpt)
    exp, paper_cost, train_data, bank, eval_split = _prepare(config, workdir)
    plan, main_process = exp.plan, jax.process_index() == 0
    record = run_record.RunRecord()
    if ckpt.latest_step is not None:
        state, record = ckpt.restore_newest(exp.abstract_state)
        if main_process:
            print(f"resumed from {ckpt.directory} at step {int(state.step)}", flush=True)
    else:
        state = exp.init(jax.random.key(config.seed))
    start = int(state.step)
    steps = exp.compiled_steps()
    loader = pipeline.make_loader(config, train_data, plan, exp.mesh, exp.host_size,
                                  jax.process_index(), jax.process_count())
    spec_at = lambda step: exp.spec(plan.resolution(step), loader.canvas(step))
    if start < plan.total_steps:
        steps.prefetch(spec_at(start))  # XLA compiles it while the kNN monitor compiles and runs
    with run_log.phase("compiling the kNN monitor", main_process):
        knn = OnlineKnn(exp, bank, eval_split)
    log = run_log.RunLog(workdir, start, plan.total_steps, config, stop, main_process)
    if changes:
        log.note({"step": start, "config_change": {k: list(v) for k, v in changes.items()}})
    if start == 0 and config.eval.at_init:
        with run_log.phase(f"kNN at initialisation ({len(bank)} bank, {len(eval_split)} query "
                           "images)", main_process):
            record.knn_top1_init = record.knn_top1 = knn(state)
        record.eval_flops += knn.flops
        log.knn(0, plan, record)
    clock = run_record.Stopwatch(record)  # from here on: the initial kNN is not training time
    loader.restore(start, record.data_iterator)
    batches = NamedSharding(exp.mesh, P("data"))
    saved_at = time.monotonic()

    @contextlib.contextmanager
    def outside_training(clock_field: str):
        """Time spent here counts as `clock_field`, not as training (nor in images/s)."""
        with log.paused(), clock.excluded(clock_field):
            yield

    def checkpoint_due(done: int) -> bool:
        if _every(config.checkpoint_every_steps, done, plan.total_steps):
            return True
        minutes = config.checkpoint_every_minutes  # decided at the log cadence, by process 0
        return minutes > 0 and _every(config.log_every_steps, done, plan.total_steps) and _agreed(
            time.monotonic() - saved_at >= 60 * minutes)

    with preemption.StopSignals() as signals, _closing(steps, loader, log, ckpt):
        for step, batch in loader:
            spec, magnitude, done = spec_at(step), plan.magnitude(step), step + 1
            with outside_training("compile_s"), run_log.phase(
                    f"compiling the train step at {spec.resolution} px",
                    main_process and not steps.ready(spec)):
                compiled = steps.get(spec)  # waits only if XLA has not finished it yet
            images = jax.tree.map(  # this host's rows, unless already global device arrays
                lambda a: a if isinstance(a, jax.Array) else
                jax.make_array_from_process_local_data(batches, a), batch)
            state, metrics = compiled(state, images, np.float32(magnitude))  # async dispatch
            if (next_bucket := plan.stage(step).end) < plan.total_steps:
                steps.prefetch(spec_at(next_bucket))  # compiled while this bucket trains
            record.add_step(spec.resolution, steps.flops[spec], steps.selection_flops[spec])
            log.add(done, plan, spec.resolution, magnitude, metrics, config.batch_size)
            if _every(config.log_every_steps, done, plan.total_steps):
                ckpt.check()  # a failed write ends the run now, not at the next save
                if log.flush():
                    break
            if _eval_due(config, plan, done):
                with outside_training("eval_s"):
                    if log.flush():
                        break
                    record.knn_top1 = knn(state)
                record.eval_flops += knn.flops
                clock.tick()
                log.knn(done, plan, record)
            preempted = signals.requested(done)
            if preempted or checkpoint_due(done):
                with outside_training("checkpoint_s"):
                    if log.flush():  # raises on divergence: a diverged state is never saved
                        break
                    clock.tick()
                    record.data_iterator = loader.state()
                    ckpt.save(done, state, record)
                    log.last_checkpoint, saved_at = done, time.monotonic()
                if preempted:
                    ckpt.wait()
                    raise preemption.Preempted(done, signals.signame)
    clock.tick()
    summary = _write_summary(workdir, exp, paper_cost, record, steps, int(state.step))
    ckpt.close()
    return summary


@contextlib.contextmanager
def _closing(steps, loader, log, ckpt):
    """Stops the compile threads, the loader and the log however the loop ends, and waits for the
    last checkpoint write; if the loop failed, that failure is the one raised."""
    try:
        yield
    finally:
        steps.close()
        loader.close()
        log.close()
        with contextlib.suppress(Exception) if sys.exc_info()[1] else contextlib.nullcontext():
            ckpt.wait()
