"""Weighted kNN classification on L2-normalised features (Wu et al. 2018, as solo-learn and
SimSiam's monitor use it): each of the k most cosine-similar bank features votes for its class
with weight exp(similarity / T). `KnnEvaluator` is the `knn` protocol of the evaluate command and
the train loop's monitor (online.py)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from effssl_jax.data import datasets
from effssl_jax.data.device_loader import upload
from effssl_jax.evaluate.base import Evaluator, Inputs

SOLO_LEARN_KNN = (20, 0.07)  # solo-learn's setting, reported next to the configured one


@functools.lru_cache(maxsize=None)
def _scores_fn(mesh: Mesh, k: int, num_classes: int):
    """jit(bank [N, D] and labels [N] sharded over `data`, queries [C, D] replicated, temperature)
    -> class scores [C, num_classes]: every device takes the top k of its shard of the bank, the
    devices' candidates are gathered and the top k of those vote. Padded bank rows have label -1
    and never win. Memory per device: C x N / devices similarities."""

    def local(bank, labels, query, temperature):
        sim = query @ bank.T  # cosine similarity of L2-normalised features
        sim = jnp.where(labels[None, :] >= 0, sim, -jnp.inf)
        top_sim, top_idx = jax.lax.top_k(sim, min(k, bank.shape[0]))
        sims = jax.lax.all_gather(top_sim, "data", axis=1, tiled=True)
        votes_for = jax.lax.all_gather(labels[top_idx], "data", axis=1, tiled=True)
        top_sim, top = jax.lax.top_k(sims, k)
        weights = jnp.where(jnp.isfinite(top_sim), jnp.exp(top_sim / temperature), 0.0)
        classes = jnp.take_along_axis(votes_for, top, axis=1)
        return (jax.nn.one_hot(classes, num_classes) * weights[..., None]).sum(axis=1)

    mapped = jax.shard_map(local, mesh=mesh, in_specs=(P("data"), P("data"), P(), P()),
                           out_specs=P(), check_vma=False)
    return jax.jit(mapped)


SIMILARITIES_PER_DEVICE = 1 << 24  # a query chunk's similarities held per device: 64 MB


def knn_classify(train_features, train_labels, query_features, k: int = 200,
                 temperature: float = 0.1, num_classes: int | None = None,
                 chunk: int = 1024, mesh: Mesh | None = None) -> np.ndarray:
    """Class scores [Q, C] of each query from its k nearest training features. Features must be
    L2-normalised. The bank is sharded over the devices of `mesh` (default: this host's) and the
    queries are scored at most `chunk` at a time, fewer when a chunk's similarities would exceed
    SIMILARITIES_PER_DEVICE, so memory is O(bank / devices) beside the features, at any size."""
    train_labels = np.asarray(train_labels, np.int32)
    num_classes = num_classes or int(train_labels.max()) + 1
    n, k = len(train_labels), min(k, len(train_labels))
    mesh = mesh or Mesh(np.array(jax.local_devices()), ("data",))
    rows = -(-n // mesh.shape["data"])  # a device's share of the bank
    bank = upload(np.asarray(train_features, np.float32), mesh, what="the kNN memory bank")
    labels = upload(train_labels, mesh, fill=-1, what="the kNN memory bank")
    fn = _scores_fn(mesh, k, num_classes)
    chunk = max(min(chunk, len(query_features), SIMILARITIES_PER_DEVICE // rows), 1)
    replicated = NamedSharding(mesh, P())
    out = []
    for i in range(0, len(query_features), chunk):
        q = np.zeros((chunk, bank.shape[1]), np.float32)  # one shape: one compile
        part = np.asarray(query_features[i:i + chunk], np.float32)
        q[:len(part)] = part
        q = jax.make_array_from_callback(q.shape, replicated, lambda idx, q=q: q[idx])
        out.append(np.asarray(jax.device_get(fn(bank, labels, q, np.float32(temperature))))
                   [:len(part)])
    return np.concatenate(out) if out else np.zeros((0, num_classes), np.float32)


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


class KnnEvaluator(Evaluator):
    """Weighted kNN of the eval split's features against the bank's, top-1 and top-5, at each
    (k, T) of `settings` (default: the config's, then solo-learn's SOLO_LEARN_KNN). Its result
    is a list with one record per setting."""
    name = "knn"
    options = {"settings": ()}  # ((k, temperature), ...)
    columns = (("knn_offline_top1_%", "kNN offline (%)"),)

    def run(self, inputs: Inputs) -> list[dict]:
        e = self.config.eval
        settings = [tuple(s) for s in self.settings["settings"]] or list(dict.fromkeys(
            [(e.knn_k, e.knn_temperature), SOLO_LEARN_KNN]))
        bank, queries = inputs.features()
        bank_x, query_x = (s.features if s.normalized else s.features / np.maximum(
            np.linalg.norm(s.features, axis=1, keepdims=True), 1e-12)  # as l2_normalize
            for s in (bank, queries))
        bank_split = datasets.info_for(self.config.dataset).bank_split
        out = []
        for k, temperature in settings:
            scores = knn_classify(bank_x, bank.labels, query_x, k=k, temperature=temperature,
                                  num_classes=bank.num_classes, mesh=inputs.exp.mesh)
            out.append({"k": k, "temperature": temperature, "weighting": "exp(cos/T)",
                        "memory_bank": f"{bank_split} split",
                        **topk_accuracy(scores, queries.labels)})
        return out

    @classmethod
    def describe(cls, result) -> str:
        return "\n".join(f"kNN k={r['k']} T={r['temperature']:g}: top-1 {100 * r['top1']:.2f}%, "
                         f"top-5 {100 * r['top5']:.2f}%" for r in result)

    @classmethod
    def cells(cls, result, config) -> dict[str, float]:
        """Top-1 at the run's own k and T (else the first setting)."""
        own = [r for r in result if (r["k"], r["temperature"]) ==
               (config["eval"]["knn_k"], config["eval"]["knn_temperature"])]
        return {"knn_offline_top1_%": (own or result)[0]["top1"]}
