"""The evaluate command: kNN and linear-probe accuracy of a workdir's checkpoint.

    python -m effssl_jax.evaluate --workdir DIR [--protocol knn|linear|all] [--step N]

extracts centre-cropped backbone features of the labelled bank split (kNN memory bank / probe
training set: the train split, or STL-10's labelled train split) and the eval split once, runs
the requested protocols and appends one record to DIR/eval.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time

import jax
import numpy as np

from effssl_jax import cli, config_schema, experiment
from effssl_jax.data import datasets, pipeline
from effssl_jax.evaluate.features import extract_features, make_feature_fn
from effssl_jax.evaluate.knn import SOLO_LEARN_KNN, knn_classify, topk_accuracy
from effssl_jax.evaluate.linear import linear_probe
from effssl_jax.methods.base import l2_normalize


def append_eval_record(workdir: str, record: dict) -> None:
    path = os.path.join(workdir, "eval.json")
    records = read_eval_records(workdir)
    records.append(record)
    with open(path + ".tmp", "w") as f:
        json.dump(records, f, indent=2)
    os.replace(path + ".tmp", path)


def read_eval_records(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "eval.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def _knn_records(config, bank, bank_x, eval_split, eval_x, settings) -> list[dict]:
    settings = settings or list(dict.fromkeys(
        [(config.eval.knn_k, config.eval.knn_temperature), SOLO_LEARN_KNN]))
    bank_x, eval_x = np.asarray(l2_normalize(bank_x)), np.asarray(l2_normalize(eval_x))
    bank_split = datasets.info_for(config.dataset).bank_split
    out = []
    for k, temperature in settings:
        scores = knn_classify(bank_x, bank.labels, eval_x, k=k, temperature=temperature,
                              num_classes=bank.num_classes)
        out.append({"k": k, "temperature": temperature, "weighting": "exp(cos/T)",
                    "memory_bank": f"{bank_split} split",
                    **topk_accuracy(scores, eval_split.labels)})
    return out


def evaluate_workdir(workdir: str, protocols=("knn", "linear"), step: int | None = None,
                     knn_settings=None, probe_options=None, write: bool = True) -> dict:
    """Evaluates WORKDIR's checkpoint with the given protocols; appends the record to
    WORKDIR/eval.json (write=True) and returns it. knn_settings: [(k, temperature), ...]
    (default: the config's, then solo-learn's k=20, T=0.07)."""
    config = config_schema.from_workdir(workdir)
    eval_res, image_size = experiment.sizes(config)
    num_pretrain = pipeline.pretrain_size(config)
    exp, state, ckpt_step = experiment.restore(workdir, step, num_pretrain)
    bank = pipeline.load_split(config, "bank", image_size)
    eval_split = pipeline.load_split(config, "eval", image_size)
    fn = make_feature_fn(exp.method.net, exp.mesh, eval_res, config.eval.crop_fraction,
                         exp.dtype, normalize=False)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    t0 = time.perf_counter()
    bank_x, eval_x = (extract_features(fn, variables, d.images, config.eval.batch_size, exp.mesh)
                      for d in (bank, eval_split))
    record = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint_step": ckpt_step, "epoch": exp.plan.epoch(ckpt_step),
        "dataset": config.dataset, "num_train": len(bank), "num_eval": len(eval_split),
        "num_classes": bank.num_classes, "feature_dim": int(bank_x.shape[1]),
        "features": f"backbone, eval-mode BN, centre crop {config.eval.crop_fraction:g} of the "
                    f"short side resized to {eval_res} px",
        "feature_s": round(time.perf_counter() - t0, 2),
    }
    if "knn" in protocols:
        record["knn"] = _knn_records(config, bank, bank_x, eval_split, eval_x, knn_settings)
    if "linear" in protocols:
        record["linear"] = linear_probe(bank_x, bank.labels, eval_x, eval_split.labels,
                                        bank.num_classes, **(probe_options or {}))
    if write and jax.process_index() == 0:
        append_eval_record(workdir, record)
    return record


def describe(record: dict) -> str:
    lines = [f"checkpoint step {record['checkpoint_step']} (epoch {record['epoch']:g}), "
             f"{record['num_train']} train / {record['num_eval']} eval images"]
    for r in record.get("knn", []):
        lines.append(f"kNN k={r['k']} T={r['temperature']:g}: top-1 {100 * r['top1']:.2f}%, "
                     f"top-5 {100 * r['top5']:.2f}%")
    if "linear" in record:
        r = record["linear"]
        lines.append(f"linear probe (L-BFGS, l2={r['protocol']['l2']:g}, "
                     f"{r['protocol']['iterations']} iterations): top-1 {100 * r['top1']:.2f}%, "
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
    parser.add_argument("--protocol", choices=("knn", "linear", "all"), default="all")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--knn", action="append", default=None, metavar="K,T", type=_knn_setting,
                        help="kNN setting, repeatable (default: the config's and 20,0.07)")
    args = parser.parse_args(argv)
    protocols = ("knn", "linear") if args.protocol == "all" else (args.protocol,)
    record = evaluate_workdir(args.workdir, protocols, args.step, args.knn)
    print(describe(record), flush=True)
    print(f"appended to {os.path.join(args.workdir, 'eval.json')}", flush=True)
    return record


def console_main():
    cli.run_main(main)
