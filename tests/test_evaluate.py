"""Weighted kNN against a brute-force reference; SimSiam's loss on hand-computed values."""
import jax.numpy as jnp
import numpy as np
import pytest

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
