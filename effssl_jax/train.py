"""The training loop: config -> plan -> data -> compiled steps -> metrics, checkpoints, summary."""
from __future__ import annotations

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from effssl_jax import (augment, checkpoint, config_schema, evaluate, methods, optim, plan as
                        plan_lib, progressive, run_log)
from effssl_jax.data import loader as loader_lib, pipeline
from effssl_jax.models import resnet
from effssl_jax.train_step import CompiledSteps, StepSpec, create_state, data_mesh, flops_of, \
    make_step_fn, step_fingerprint


def compute_dtype(name: str):
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def build_method(config, dtype, steps_per_epoch: int, total_steps: int):
    m = config.model
    backbone = resnet.get_backbone(m.arch, width=m.width, cifar_stem=m.cifar_stem, dtype=dtype,
                                   conv_impl=m.conv_impl)
    view = augment.ViewConfig(crop_scale=tuple(config.augment.crop_scale),
                              blur_prob=config.augment.blur_prob)
    return methods.get_method(config, methods.MethodContext(
        backbone=backbone, feature_dim=resnet.feature_dim(m.arch, m.width), view_config=view,
        dtype=dtype, steps_per_epoch=steps_per_epoch, total_steps=total_steps))


XLA_CACHE_BYTES = 4 * 2**30  # least recently used executables are evicted beyond this


def enable_compilation_cache(workdir: str) -> str:
    """Persistent XLA cache next to the workdir: a sibling run with the same shapes loads its
    buckets' executables instead of recompiling them (it still traces and lowers them); a resumed
    run loads its serialised steps from the returned folder without tracing (CompiledSteps)."""
    cache = os.path.join(os.path.dirname(os.path.abspath(workdir)), ".jax_cache")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_compilation_cache_max_size", XLA_CACHE_BYTES)
    date_undated_entries(cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return os.path.join(cache, "steps")


def date_undated_entries(cache: str) -> None:
    """Gives each entry of XLA's cache that lacks one (written by a run without the cap) the access
    time JAX's eviction reads; without it, JAX fails to write any new entry. Dated by mtime."""
    if not os.path.isdir(cache):
        return
    for entry in os.scandir(cache):
        if entry.name.endswith("-cache"):
            atime = os.path.join(cache, entry.name.removesuffix("-cache") + "-atime")
            if not os.path.exists(atime):
                with open(atime, "wb") as f:
                    f.write(entry.stat().st_mtime_ns.to_bytes(8, "little"))


class Evaluator:
    """Online kNN on backbone features of the held-out split (labelled bank split as memory)."""

    def __init__(self, config, method, mesh, train_ds, eval_ds, resolution, dtype, abstract_vars):
        self.config, self.mesh = config, mesh
        self.train_ds, self.eval_ds = train_ds, eval_ds
        fn = evaluate.make_feature_fn(method.net, mesh, resolution, config.eval.crop_fraction, dtype)
        batch = max(config.eval.batch_size // mesh.devices.size, 1) * mesh.devices.size
        size = train_ds.images.shape[1]
        images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8)
        lowered = fn.lower(abstract_vars, images)
        self.feature_fn = lowered.compile()
        self.flops_per_batch = flops_of(lowered)
        self.batches = sum(-(-len(d) // batch) for d in (train_ds, eval_ds))

    def knn_top1(self, state) -> float:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        feats = [evaluate.extract_features(self.feature_fn, variables, d.images,
                                           self.config.eval.batch_size, self.mesh)
                 for d in (self.train_ds, self.eval_ds)]
        return evaluate.knn_accuracy(feats[0], self.train_ds.labels, feats[1],
                                     self.eval_ds.labels, k=self.config.eval.knn_k,
                                     temperature=self.config.eval.knn_temperature,
                                     num_classes=self.train_ds.num_classes)


def load_config(workdir: str):
    """A run's resolved config (WORKDIR/config.json) over today's defaults."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found; --workdir must name a run's directory")
    config = config_schema.default_config()
    with open(path) as f:
        config.update(json.load(f))
    return config


def sizes(config) -> tuple[int, int]:
    """(evaluation resolution, host decode size) of a config."""
    p = config.progressive
    eval_res = config.eval.resolution or p.r_max
    return eval_res, config.image_size or max(p.r_max, eval_res)


def build_state(config, mesh, dtype, num_train: int):
    """The plan, method, optimizer, jitted state initialiser and abstract (replicated) state;
    shared by train.run and the offline tools (evaluate, export) that restore checkpoints.
    The state's shapes do not depend on num_train, which only sets the plan's schedules."""
    plan = plan_lib.make_plan(config, num_train)
    method = build_method(config, dtype, plan.steps_per_epoch, plan.total_steps)
    tx = optim.from_config(config.optim, plan.lr, plan.momentum)
    replicated = NamedSharding(mesh, P())
    init = jax.jit(lambda rng: create_state(method, tx, rng, config.progressive.r_max),
                   out_shardings=replicated)
    abstract = jax.eval_shape(init, jax.random.key(config.seed))
    return plan, method, tx, init, checkpoint.abstract_like(abstract, replicated)


def _eval_due(config, plan, step: int) -> bool:
    if config.eval.every_epochs <= 0:  # evaluation off (e.g. the LR range test)
        return False
    every = max(round(config.eval.every_epochs * plan.steps_per_epoch), 1)
    return step % every == 0 or step == plan.total_steps


def run(config, workdir: str, stop=None) -> dict:
    """Trains (resuming from WORKDIR/checkpoints if present); returns the summary dict.
    stop: optional callable(metrics record) -> bool that ends the run early (LR range test)."""
    mesh = data_mesh()
    config_schema.validate(config, num_devices=mesh.devices.size)
    os.makedirs(workdir, exist_ok=True)
    step_cache = enable_compilation_cache(workdir)
    dtype = compute_dtype(config.dtype)
    eval_res, image_size = sizes(config)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))

    train_data, train_ds, eval_ds = pipeline.open_run_data(config, image_size)
    plan, method, tx, init, abstract = build_state(config, mesh, dtype, len(train_data))
    logging.info("plan:\n%s", plan.describe())
    if jax.process_index() == 0:
        print(plan.describe(), flush=True)
    batch_sharding = NamedSharding(mesh, P("data"))

    ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
    meta = {"flops_by_resolution": {}, "steps_by_resolution": {}, "knn_top1_init": None}
    if ckpt.latest_step is not None:
        state, meta = ckpt.restore(abstract)
        print(f"resumed from {ckpt.directory} at step {int(state.step)}", flush=True)
    else:
        state = init(jax.random.key(config.seed))
    start = int(state.step)
    log = run_log.MetricsLog(workdir, resume_step=start)

    steps = CompiledSteps(lambda spec: make_step_fn(method, tx, spec, dtype), mesh, abstract,
                          step_cache, step_fingerprint(config, len(train_data)))
    local_batch = config.batch_size // jax.process_count()
    loader = pipeline.make_loader(config, train_data, plan, jax.process_index(),
                                  jax.process_count())

    def spec_at(step: int) -> StepSpec:
        r = plan.resolution(step)
        return StepSpec(r, plan.num_views, plan.selection_resolution(r), loader.host_size(step),
                        local_batch, config.hard_augment.extra_targets)

    if start < plan.total_steps:
        steps.prefetch(spec_at(start))  # XLA compiles it while the evaluator compiles and runs
    abstract_vars = {"params": abstract.params, "batch_stats": abstract.batch_stats}
    evaluator = Evaluator(config, method, mesh, train_ds, eval_ds, eval_res, dtype, abstract_vars)
    eval_flops = 0.0
    knn = None
    if start == 0 and config.eval.at_init:
        knn = meta["knn_top1_init"] = evaluator.knn_top1(state)
        eval_flops += evaluator.flops_per_batch * evaluator.batches
        log.write({"step": 0, "epoch": 0.0, "knn_top1": knn, "pflops": 0.0, "train_time_s": 0.0})
        print(f"kNN top-1 at initialisation: {100 * knn:.2f}%", flush=True)

    loader.restore(start, meta.get("data_iterator"))
    bar = run_log.progress_bar(plan.total_steps, start, config.progress_bar and
                               jax.process_index() == 0)
    pending = run_log.PendingMetrics()
    clock = run_log.Stopwatch(meta)

    def write_pending() -> bool:
        """Logs the fetched metrics of recent steps; True when `stop` asks to end the run."""
        records = pending.fetch()
        for record in records:
            if stop is not None and stop(record):
                return True
            if not np.isfinite(record["loss"]):
                raise FloatingPointError(
                    f"loss is {record['loss']} at step {record['step']}; lower --config.optim.lr "
                    "or check the data (rerunning resumes from the last checkpoint)")
            log.write(record)
        if records:
            last = records[-1]
            bar.set_postfix(loss=f"{last['loss']:.4f}", res=last["resolution"],
                            lr=f"{last['lr']:.3g}", img_s=f"{last['images_per_sec']:.0f}")
        return False

    try:
        for step, local_images in loader:
            stage, spec = plan.stage(step), spec_at(step)
            with pending.paused(), clock.excluded("compile_s"):
                compiled = steps.get(spec)  # waits only if XLA has not finished it yet
            images = jax.make_array_from_process_local_data(batch_sharding, local_images)
            magnitude = plan.magnitude(step)
            state, metrics = compiled(state, images, np.float32(magnitude))  # async dispatch
            if stage.end < plan.total_steps:  # the next bucket's step is traced while this step
                steps.prefetch(spec_at(stage.end))  # runs, and compiled while this bucket trains
            key = str(stage.resolution)
            meta["flops_by_resolution"][key] = meta["flops_by_resolution"].get(key, 0.0) + \
                steps.flops[spec]
            meta["steps_by_resolution"][key] = meta["steps_by_resolution"].get(key, 0) + 1
            meta["selection_flops"] = meta.get("selection_flops", 0.0) + steps.selection_flops[spec]
            done = step + 1
            pending.add({"step": done, "epoch": done / plan.steps_per_epoch,
                         "resolution": stage.resolution, "magnitude": magnitude}, metrics,
                        config.batch_size)
            bar.update(1)
            if done % config.log_every_steps == 0 or done == plan.total_steps:
                if write_pending():
                    break
            if _eval_due(config, plan, done):
                with pending.paused(), clock.excluded("eval_s"):
                    if write_pending():
                        break
                    knn = evaluator.knn_top1(state)
                eval_flops += evaluator.flops_per_batch * evaluator.batches
                clock.update()
                log.write({"step": done, "epoch": done / plan.steps_per_epoch, "knn_top1": knn,
                           "pflops": sum(meta["flops_by_resolution"].values()) / 1e15,
                           "train_time_s": _train_time(meta), "wall_clock_s": meta["wall_clock_s"]})
                bar.write(f"epoch {done / plan.steps_per_epoch:g}: kNN top-1 {100 * knn:.2f}%")
            if done % config.checkpoint_every_steps == 0 or done == plan.total_steps:
                with pending.paused(), clock.excluded("checkpoint_s"):
                    if write_pending():
                        break
                    clock.update()
                    meta["data_iterator"] = loader.state()
                    ckpt.save(done, state, meta)
    finally:
        steps.close()
        loader.close()
        bar.close()
        ckpt.wait()
    clock.update()
    log.close()

    summary = make_summary(config, plan, meta, steps, eval_flops, knn, int(state.step))
    if jax.process_index() == 0:
        run_log.write_json(os.path.join(workdir, "summary.json"), summary)
        print("summary: " + ", ".join(f"{k}={summary[k]}" for k in
                                      ("knn_top1_init", "knn_top1", "total_pflops",
                                       "wall_clock_s")), flush=True)
    ckpt.close()
    return summary


def _eq11_overhead(config, plan, steps_by_resolution: dict) -> float:
    """Eq. 11's 1 - M_ha averaged over the steps run (0 without Hard Augment)."""
    if not plan.hard_augment or not steps_by_resolution:
        return 0.0
    total = sum(steps_by_resolution.values())
    return sum(n * (1 - progressive.hard_augment_speed_factor(
        int(r), plan.selection_resolution(int(r)), plan.num_views))
        for r, n in steps_by_resolution.items()) / total


def _train_time(meta) -> float:
    """Wall-clock seconds so far less compile, eval and checkpoint time."""
    return meta["wall_clock_s"] - meta["compile_s"] - meta["eval_s"] - meta["checkpoint_s"]


def make_summary(config, plan, meta, steps, eval_flops, knn, step) -> dict:
    train_flops = sum(meta["flops_by_resolution"].values())
    summary = {
        "name": config.name, "method": config.method, "lr_schedule": config.optim.schedule,
        "resolution_schedule": config.progressive.schedule,
        "hard_augment": bool(config.hard_augment.enabled), "steps": step,
        "epochs": step / plan.steps_per_epoch, "knn_top1_init": meta["knn_top1_init"],
        "knn_top1": knn, "wall_clock_s": round(meta["wall_clock_s"], 2),
        "train_time_s": round(_train_time(meta), 2),
        "compile_s": round(meta["compile_s"], 2), "eval_s": round(meta["eval_s"], 2),
        "total_pflops": train_flops / 1e15, "eval_pflops": eval_flops / 1e15,
        "selection_pflops": meta.get("selection_flops", 0.0) / 1e15,
        "selection_overhead": meta.get("selection_flops", 0.0) / max(train_flops, 1e-9),
        "selection_overhead_eq11": _eq11_overhead(config, plan, meta["steps_by_resolution"]),
        "pflops_by_resolution": {k: v / 1e15 for k, v in meta["flops_by_resolution"].items()},
        "steps_by_resolution": meta["steps_by_resolution"],
        "gflops_per_step": {str(s.resolution): f / 1e9 for s, f in steps.flops.items()},
        "predicted_speedup_resolution": plan.predicted_speedup,
        "compiled_steps": steps.compile_count - len(steps.loaded),
        "loaded_steps": len(steps.loaded),  # serialised steps of an earlier process (resume)
        "skipped_images": len(loader_lib.SKIPPED),  # undecodable files met by this process
    }
    if config.compare_to:
        base = run_log.read_summary(config.compare_to)
        summary["speedup_vs"] = {"workdir": config.compare_to,
                                 "flops": base["total_pflops"] / summary["total_pflops"],
                                 "train_time": base["train_time_s"] / max(summary["train_time_s"], 1e-9)}
    return summary
