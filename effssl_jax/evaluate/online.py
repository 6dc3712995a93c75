"""The train loop's kNN monitor: backbone features of the held-out split against the labelled
bank split (both held in memory, at most eval.online_subset images each), compiled once before
training starts; the bank is sharded over the run's devices (knn.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from effssl_jax.compile import flops_of
from effssl_jax.evaluate.features import extract_features, make_feature_fn
from effssl_jax.evaluate.knn import knn_accuracy


class OnlineKnn:
    def __init__(self, exp, bank, eval_split):
        c = exp.config.eval
        self.settings = dict(k=c.knn_k, temperature=c.knn_temperature)
        self.mesh, self.batch_size = exp.mesh, c.batch_size
        self.bank, self.eval_split = bank, eval_split
        fn = make_feature_fn(exp.method.net, exp.mesh, exp.dtype)
        batch = max(c.batch_size // exp.mesh.devices.size, 1) * exp.mesh.devices.size
        size = bank.images.shape[1]
        lowered = fn.lower(exp.abstract_variables,
                           jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8))
        self.feature_fn = lowered.compile()
        batches = sum(-(-len(d) // batch) for d in (bank, eval_split))
        self.flops = flops_of(lowered) * batches  # of one evaluation

    def __call__(self, state) -> float:
        """kNN top-1 accuracy of `state`'s backbone."""
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        bank, queries = (extract_features(self.feature_fn, variables, d.images, self.batch_size,
                                          self.mesh) for d in (self.bank, self.eval_split))
        return knn_accuracy(bank, self.bank.labels, queries, self.eval_split.labels,
                            num_classes=self.bank.num_classes, mesh=self.mesh, **self.settings)
