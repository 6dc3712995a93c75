"""Weighted kNN classification on L2-normalised features (Wu et al. 2018, as solo-learn and
SimSiam's monitor use it): each of the k most cosine-similar bank features votes for its class
with weight exp(similarity / T)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

SOLO_LEARN_KNN = (20, 0.07)  # solo-learn's setting, reported next to the configured one


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_scores(train_features, train_labels, query, k: int, temperature: float, num_classes: int):
    sim = query @ train_features.T  # cosine similarity of L2-normalised features
    top_sim, top_idx = jax.lax.top_k(sim, k)
    weights = jnp.exp(top_sim / temperature)
    votes = jax.nn.one_hot(train_labels[top_idx], num_classes) * weights[..., None]
    return votes.sum(axis=1)  # [Q, num_classes]


def knn_classify(train_features, train_labels, query_features, k: int = 200,
                 temperature: float = 0.1, num_classes: int | None = None,
                 chunk: int = 1024) -> np.ndarray:
    """Class scores [Q, C] of each query from its k nearest training features. Features must be
    L2-normalised; queries are scored `chunk` at a time."""
    train_labels = np.asarray(train_labels)
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, len(train_labels))
    tf, tl = jnp.asarray(train_features), jnp.asarray(train_labels)
    out = [np.asarray(_knn_scores(tf, tl, jnp.asarray(query_features[i:i + chunk]), k,
                                  temperature, num_classes))
           for i in range(0, len(query_features), chunk)]
    return np.concatenate(out)


def topk_accuracy(scores, labels, ks=(1, 5)) -> dict[str, float]:
    """{'top1': ..., 'top5': ...}: fraction of rows whose label is among the k highest scores
    (ties broken by class index, as argsort; k is capped at the number of classes)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    order = np.argsort(-scores, axis=-1, kind="stable")
    return {f"top{k}": float(np.mean((order[:, :min(k, scores.shape[1])] == labels[:, None])
                                     .any(-1))) for k in ks}


def knn_accuracy(train_features, train_labels, query_features, query_labels, **kw) -> float:
    scores = knn_classify(train_features, train_labels, query_features, **kw)
    return topk_accuracy(scores, query_labels, ks=(1,))["top1"]
