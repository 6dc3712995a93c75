"""The evaluate command: the registered evaluators (registry.py) on a workdir's checkpoint.

    python -m effssl_jax.evaluate --workdir DIR [--protocol knn,linear] [--step N]
        [--option NAME.KEY=VALUE ...] [--distributed]

restores the checkpoint with the config the run was trained with and runs each protocol on it;
those that read features share one extraction of the labelled bank split (kNN memory bank / probe
training set: the train split, or STL-10's labelled train split) and the eval split. The splits
are streamed: decoded a chunk at a time, each host decoding its share, so memory holds the
features, not the images; the kNN shards the bank over the devices (knn.py). One record is
appended to DIR/eval.json, each protocol's result under its name.
"""
from __future__ import annotations

import datetime

import jax
from absl import flags

from effssl_jax import cli, config_schema, experiment, run_log, storage
from effssl_jax.data import pipeline
from effssl_jax.evaluate import registry
from effssl_jax.evaluate.base import Inputs, SplitFeatures
from effssl_jax.evaluate.features import make_feature_fn, stream_features

_PROTOCOL = flags.DEFINE_list("protocol", list(registry.DEFAULT), "The evaluators to run, comma "
                              "separated: knn, linear, simsiam_linear (SimSiam's linear "
                              "evaluation: LARS, 90 epochs, augmented) or any registered one.")
_OPTION = flags.DEFINE_multi_string("option", [], "An evaluator's option, NAME.KEY=VALUE "
                                    "(repeatable), e.g. knn.settings='((20, 0.07),)', "
                                    "linear.optimizer=sgd, simsiam_linear.epochs=10; each "
                                    "evaluator's `options` hold the keys and defaults.")


def append_eval_record(workdir: str, record: dict) -> None:
    """Rewrites WORKDIR/eval.json whole with `record` added (never seen half-written)."""
    run_log.append_json(storage.join(workdir, "eval.json"), record)


def read_eval_records(workdir: str) -> list[dict]:
    return run_log.read_json_list(storage.join(workdir, "eval.json"))


def _features(config, split: str, resolution: int, fn, variables, mesh) -> SplitFeatures:
    """A split's features, streamed (pipeline.stream_split), with a progress line."""
    chunks, num_local, num_classes = pipeline.stream_split(
        config, split, resolution, jax.process_index(), jax.process_count())
    with run_log.phase(f"extracting the {split} split's features", jax.process_index() == 0):
        x, labels = stream_features(fn, variables, chunks, num_local, resolution,
                                    config.eval.batch_size, mesh)
    return SplitFeatures(x, labels, num_classes)


def evaluate_workdir(workdir: str, protocols=registry.DEFAULT, step: int | None = None,
                     options: dict | None = None, write: bool = True) -> dict:
    """Runs the evaluators named in `protocols` on WORKDIR's checkpoint (the latest, or `step`);
    appends the record to WORKDIR/eval.json (write=True) and returns it. options: {name: {key:
    value}} overriding each evaluator's `options`."""
    evaluators = [registry.get(name) for name in protocols]  # an unknown name: before restoring
    config = config_schema.from_workdir(workdir)
    experiment.enable_dtype(config.dtype)
    eval_res = experiment.eval_resolution(config)
    exp, state, ckpt_step = experiment.restore(workdir, step, pipeline.num_train_examples(config))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    fn = make_feature_fn(exp.method.net, exp.mesh, exp.dtype, normalize=False)
    inputs = Inputs(config, exp, variables, eval_res, lambda: tuple(
        _features(config, split, eval_res, fn, variables, exp.mesh) for split in ("bank", "eval")))
    record = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint_step": ckpt_step, "epoch": exp.plan.epoch(ckpt_step),
        "dataset": config.dataset,
        "features": f"backbone, eval-mode BN, shorter side resized to "
                    f"{round(eval_res / config.eval.crop_fraction)} px, centre crop {eval_res} px",
    }
    results = {cls.name: cls(config, **(options or {}).get(cls.name, {})).run(inputs)
               for cls in evaluators}
    if inputs.feature_s is not None:
        bank, queries = inputs.features()
        record.update(num_train=len(bank), num_eval=len(queries), num_classes=bank.num_classes,
                      feature_dim=int(bank.features.shape[1]), feature_s=inputs.feature_s)
    record.update(results)
    if write and jax.process_index() == 0:
        append_eval_record(workdir, record)
    return record


def describe(record: dict) -> str:
    """The lines the command prints: the checkpoint, then each evaluator's result."""
    lines = [f"checkpoint step {record['checkpoint_step']} (epoch {record['epoch']:g})" + (
        f", {record['num_train']} train / {record['num_eval']} eval images"
        if "num_train" in record else "")]
    lines += [cls.describe(record[name]) for name, cls in registry.EVALUATORS.items()
              if name in record]
    return "\n".join(lines)


def _command(positional: list[str]) -> dict:
    """The command on the parsed flags."""
    cli.flags_only(positional)
    cli.initialize_distributed()
    workdir = cli.workdir()
    record = evaluate_workdir(workdir, _PROTOCOL.value, cli.STEP.value,
                              registry.parse_options(_OPTION.value))
    if jax.process_index() == 0:
        print(describe(record), flush=True)
        print(f"appended to {storage.join(workdir, 'eval.json')}", flush=True)
    return record


def main(argv: list[str]) -> dict:
    """The command from Python: main(["--workdir", DIR, "--protocol", "knn"])."""
    return _command(cli.parse(["effssl-evaluate", *argv]))


def console_main():
    cli.run_app(_command, __name__, (cli.WORKDIR, cli.STEP, *cli.MULTI_HOST))
