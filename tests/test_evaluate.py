"""Weighted kNN against a brute-force reference, the linear probe on separable and random
features, offline evaluation of a workdir; SimSiam's loss on hand-computed values."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from runs import tiny_run

from effssl_jax import evaluate
from effssl_jax.methods.base import negative_cosine


def brute_force_knn(train, train_labels, queries, k, t, num_classes):
    out = []
    for q in queries:
        sims = [float(np.dot(q, x)) for x in train]
        order = sorted(range(len(train)), key=lambda i: -sims[i])[:k]
        scores = [0.0] * num_classes
        for i in order:
            scores[train_labels[i]] += np.exp(sims[i] / t)
        out.append(scores)
    return np.array(out)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_knn_equals_brute_force():
    rng = np.random.default_rng(0)
    train, queries = unit(rng.normal(size=(300, 16))), unit(rng.normal(size=(50, 16)))
    labels = rng.integers(0, 7, 300)
    scores = evaluate.knn_classify(train, labels, queries, k=20, temperature=0.1,
                                   num_classes=7, chunk=16)
    ref = brute_force_knn(train, labels, queries, 20, 0.1, 7)
    np.testing.assert_allclose(scores, ref, rtol=2e-4)
    assert (scores.argmax(1) == ref.argmax(1)).all()


def test_knn_accuracy_on_clustered_features():
    rng = np.random.default_rng(1)
    centres = unit(rng.normal(size=(5, 32)))
    labels = rng.integers(0, 5, 500)
    feats = unit(centres[labels] + 0.05 * rng.normal(size=(500, 32)))
    assert evaluate.knn_accuracy(feats[:400], labels[:400], feats[400:], labels[400:], k=200) == 1.0
    shuffled = rng.permutation(labels[:400])
    acc = evaluate.knn_accuracy(feats[:400], shuffled, feats[400:], labels[400:], k=200)
    assert acc < 0.5  # labels unrelated to the features: near chance (0.2)


def test_simsiam_negative_cosine_hand_values():
    p = jnp.array([[1.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    z = jnp.array([[0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(negative_cosine(p, z), [0.0, -1.0, 1.0], atol=1e-6)
    p, z = jnp.array([[1.0, 2.0]]), jnp.array([[2.0, 1.0]])
    assert float(negative_cosine(p, z)[0]) == pytest.approx(-4 / 5)


def test_topk_accuracy_by_hand():
    scores = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    acc = evaluate.topk_accuracy(scores, np.array([2, 0, 0]), ks=(1, 2))
    assert acc == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3)}


def test_knn_top5_equals_brute_force():
    rng = np.random.default_rng(2)
    train, queries = unit(rng.normal(size=(200, 8))), unit(rng.normal(size=(40, 8)))
    labels, query_labels = rng.integers(0, 10, 200), rng.integers(0, 10, 40)
    scores = evaluate.knn_classify(train, labels, queries, k=20, temperature=0.07, num_classes=10)
    ref = brute_force_knn(train, labels, queries, 20, 0.07, 10)
    top5 = np.mean([query_labels[i] in np.argsort(-ref[i])[:5] for i in range(40)])
    assert evaluate.topk_accuracy(scores, query_labels)["top5"] == pytest.approx(top5)


def test_linear_probe_separable_features_reach_100_percent():
    rng = np.random.default_rng(3)
    # Five classes, each a Gaussian blob around its own centre: linearly separable with margin.
    centres = 6.0 * unit(rng.normal(size=(5, 16)))
    labels = rng.integers(0, 5, 1200)
    feats = centres[labels] + 0.5 * rng.normal(size=(1200, 16))
    r = evaluate.linear_probe(feats[:1000], labels[:1000], feats[1000:], labels[1000:], 5)
    assert r["top1"] >= 0.99 and r["top5"] == 1.0 and r["train_top1"] >= 0.99
    assert r["protocol"]["l2"] in r["protocol"]["l2_grid"]
    assert set(r["protocol"]["val_top1_by_l2"]) == {str(v) for v in r["protocol"]["l2_grid"]}


def test_linear_probe_random_features_at_chance():
    rng = np.random.default_rng(4)
    feats, labels = rng.normal(size=(3000, 32)), rng.integers(0, 10, 3000)
    r = evaluate.linear_probe(feats[:2000], labels[:2000], feats[2000:], labels[2000:], 10)
    assert abs(r["top1"] - 0.1) < 0.04  # chance; 1000 test samples: std ~0.01
    assert abs(r["top5"] - 0.5) < 0.06


def test_offline_evaluation_of_a_workdir(tmp_path):
    """The offline kNN of the last checkpoint (config's k and T) equals the train loop's online
    kNN, both protocols land in eval.json, and records are appended."""
    workdir = tiny_run(tmp_path / "run", epochs=1)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    record = evaluate.main(["--workdir", workdir])
    assert record["checkpoint_step"] == summary["steps"]
    knn = {(r["k"], r["temperature"]): r for r in record["knn"]}
    assert set(knn) == {(5, 0.1), (20, 0.07)}
    assert knn[(5, 0.1)]["top1"] == pytest.approx(summary["knn_top1"])
    assert 0 <= record["linear"]["top1"] <= record["linear"]["top5"] <= 1
    assert record["linear"]["protocol"]["optimizer"].startswith("full-batch L-BFGS")
    evaluate.main(["--workdir", workdir, "--protocol", "knn", "--knn", "3,0.5"])
    records = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert len(records) == 2 and "linear" not in records[1]
    assert [(r["k"], r["temperature"]) for r in records[1]["knn"]] == [(3, 0.5)]
