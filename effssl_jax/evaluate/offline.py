"""The evaluate command: kNN and linear-probe accuracy of a workdir's checkpoint.

    python -m effssl_jax.evaluate --workdir DIR [--protocol knn|linear|all] [--step N]
        [--distributed]

extracts centre-cropped backbone features of the labelled bank split (kNN memory bank / probe
training set: the train split, or STL-10's labelled train split) and the eval split once, runs
the requested protocols and appends one record to DIR/eval.json. The splits are streamed: decoded
a chunk at a time, each host decoding its share, so memory holds the features, not the images;
the kNN shards the bank over the devices (knn.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time

import jax
import numpy as np

from effssl_jax import cli, config_schema, distributed, experiment, run_log, storage
from effssl_jax.data import datasets, pipeline
from effssl_jax.evaluate import lincls
from effssl_jax.evaluate.features import make_feature_fn, stream_features
from effssl_jax.evaluate.knn import SOLO_LEARN_KNN, knn_classify, topk_accuracy
from effssl_jax.evaluate.linear import linear_probe


def append_eval_record(workdir: str, record: dict) -> None:
    """Rewrites WORKDIR/eval.json whole with `record` added (never seen half-written)."""
    run_log.write_json(storage.join(workdir, "eval.json"), read_eval_records(workdir) + [record])


def read_eval_records(workdir: str) -> list[dict]:
    try:
        return json.loads(storage.read_text(storage.join(workdir, "eval.json")))
    except FileNotFoundError:
        return []


def _knn_records(config, bank, bank_x, eval_split, eval_x, settings, mesh) -> list[dict]:
    settings = settings or list(dict.fromkeys(
        [(config.eval.knn_k, config.eval.knn_temperature), SOLO_LEARN_KNN]))
    bank_x, eval_x = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
                      for x in (bank_x, eval_x))  # as methods.base.l2_normalize
    bank_split = datasets.info_for(config.dataset).bank_split
    out = []
    for k, temperature in settings:
        scores = knn_classify(bank_x, bank.labels, eval_x, k=k, temperature=temperature,
                              num_classes=bank.num_classes, mesh=mesh)
        out.append({"k": k, "temperature": temperature, "weighting": "exp(cos/T)",
                    "memory_bank": f"{bank_split} split",
                    **topk_accuracy(scores, eval_split.labels)})
    return out


@dataclasses.dataclass
class SplitFeatures:
    features: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # int32 [N]
    num_classes: int

    def __len__(self):
        return len(self.labels)


def _features(config, split: str, resolution: int, fn, variables, mesh) -> SplitFeatures:
    """A split's features, streamed (pipeline.stream_split), with a progress line."""
    chunks, num_local, num_classes = pipeline.stream_split(
        config, split, resolution, jax.process_index(), jax.process_count())
    with run_log.phase(f"extracting the {split} split's features", jax.process_index() == 0):
        x, labels = stream_features(fn, variables, chunks, num_local, resolution,
                                    config.eval.batch_size, mesh)
    return SplitFeatures(x, labels, num_classes)


def evaluate_workdir(workdir: str, protocols=("knn", "linear"), step: int | None = None,
                     knn_settings=None, probe_options=None, write: bool = True,
                     lincls_options=None) -> dict:
    """Evaluates WORKDIR's checkpoint with the given protocols (knn, linear, simsiam_linear);
    appends the record to WORKDIR/eval.json (write=True) and returns it. knn_settings:
    [(k, temperature), ...] (default: the config's, then solo-learn's k=20, T=0.07);
    lincls_options override lincls.SIMSIAM_LINEAR."""
    config = config_schema.from_workdir(workdir)
    experiment.enable_dtype(config.dtype)
    eval_res = experiment.eval_resolution(config)
    num_pretrain = pipeline.num_train_examples(config)
    exp, state, ckpt_step = experiment.restore(workdir, step, num_pretrain)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    record = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint_step": ckpt_step, "epoch": exp.plan.epoch(ckpt_step),
        "dataset": config.dataset,
        "features": f"backbone, eval-mode BN, shorter side resized to "
                    f"{round(eval_res / config.eval.crop_fraction)} px, centre crop {eval_res} px",
    }
    if {"knn", "linear"} & set(protocols):  # on features extracted once
        fn = make_feature_fn(exp.method.net, exp.mesh, exp.dtype, normalize=False)
        t0 = time.perf_counter()
        bank, eval_split = (_features(config, split, eval_res, fn, variables, exp.mesh)
                            for split in ("bank", "eval"))
        bank_x, eval_x = bank.features, eval_split.features
        record.update(num_train=len(bank), num_eval=len(eval_split),
                      num_classes=bank.num_classes, feature_dim=int(bank_x.shape[1]),
                      feature_s=round(time.perf_counter() - t0, 2))
    if "knn" in protocols:
        record["knn"] = _knn_records(config, bank, bank_x, eval_split, eval_x, knn_settings,
                                     exp.mesh)
    if "linear" in protocols:
        record["linear"] = linear_probe(bank_x, bank.labels, eval_x, eval_split.labels,
                                        bank.num_classes, **(probe_options or {}))
    if "simsiam_linear" in protocols:
        record["simsiam_linear"] = lincls.simsiam_linear(exp, variables, eval_res,
                                                         **(lincls_options or {}))
    if write and jax.process_index() == 0:
        append_eval_record(workdir, record)
    return record


def describe(record: dict) -> str:
    lines = [f"checkpoint step {record['checkpoint_step']} (epoch {record['epoch']:g})" + (
        f", {record['num_train']} train / {record['num_eval']} eval images"
        if "num_train" in record else "")]
    for r in record.get("knn", []):
        lines.append(f"kNN k={r['k']} T={r['temperature']:g}: top-1 {100 * r['top1']:.2f}%, "
                     f"top-5 {100 * r['top5']:.2f}%")
    if "simsiam_linear" in record:
        r = record["simsiam_linear"]
        lines.append(f"SimSiam linear protocol ({r['protocol']['epochs']} epochs, batch "
                     f"{r['protocol']['batch_size']}): top-1 {100 * r['top1']:.2f}%, "
                     f"top-5 {100 * r['top5']:.2f}%")
    if "linear" in record:
        r = record["linear"]
        lines.append(f"linear probe ({r['protocol']['optimizer'].split(' (')[0]}, "
                     f"l2={r['protocol']['l2']:g}, {r['protocol']['iterations']} iterations): "
                     f"top-1 {100 * r['top1']:.2f}%, "
                     f"top-5 {100 * r['top5']:.2f}%")
    return "\n".join(lines)


def _knn_setting(text: str) -> tuple[int, float]:
    try:
        k, temperature = text.split(",")
        return int(k), float(temperature)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K,T (e.g. 20,0.07)") from None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="effssl-evaluate",
        description="kNN and linear-probe accuracy of a run's checkpoint; appends to "
                    "WORKDIR/eval.json")
    parser.add_argument("--workdir", required=True, help="the run's folder")
    parser.add_argument("--protocol", choices=("knn", "linear", "all", "simsiam_linear"),
                        default="all", help="all: knn and linear; simsiam_linear: SimSiam's "
                        "linear evaluation on the frozen backbone (LARS, 90 epochs, augmented)")
    parser.add_argument("--lincls-epochs", type=int, default=None,
                        help="simsiam_linear: epochs (default 90)")
    parser.add_argument("--lincls-batch-size", type=int, default=None,
                        help="simsiam_linear: batch (default 4096; lr scales with it)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--knn", action="append", default=None, metavar="K,T", type=_knn_setting,
                        help="kNN setting, repeatable (default: the config's and 20,0.07)")
    parser.add_argument("--probe", choices=("lbfgs", "sgd"), default="lbfgs",
                        help="the linear probe's optimizer: full-batch L-BFGS (exact; the "
                             "features on one device) or minibatch SGD (memory bounded)")
    parser.add_argument("--distributed", action="store_true",
                        help="several hosts: every host runs the same command (docs/multi_host.md)")
    parser.add_argument("--coordinator_address", default=None,
                        help="with --distributed: process 0's HOST:PORT (default: detected)")
    parser.add_argument("--num_processes", type=int, default=None,
                        help="with --distributed: the number of processes (default: detected)")
    parser.add_argument("--process_id", type=int, default=None,
                        help="with --distributed: this process's id (default: detected)")
    args = parser.parse_args(argv)
    if args.distributed:
        distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=args.num_processes, process_id=args.process_id)
    protocols = ("knn", "linear") if args.protocol == "all" else (args.protocol,)
    lincls_options = {k: v for k, v in (("epochs", args.lincls_epochs),
                                        ("batch_size", args.lincls_batch_size)) if v}
    record = evaluate_workdir(args.workdir, protocols, args.step, args.knn,
                              {"optimizer": args.probe}, lincls_options=lincls_options)
    if distributed.is_main_process():
        print(describe(record), flush=True)
        print(f"appended to {storage.join(args.workdir, 'eval.json')}", flush=True)
    return record


def console_main():
    cli.run_main(main)
