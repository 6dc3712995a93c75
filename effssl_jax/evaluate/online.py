"""The train loop's kNN monitor: the registry's `knn` evaluator at the config's k and T, on
backbone features of the held-out split against the labelled bank split (both held in memory, at
most eval.online_subset images each), the feature extractor compiled once before training starts;
the bank is sharded over the run's devices (knn.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from effssl_jax.compile import flops_of
from effssl_jax.evaluate import registry
from effssl_jax.evaluate.base import Inputs, SplitFeatures
from effssl_jax.evaluate.features import extract_features, make_feature_fn


class OnlineKnn:
    def __init__(self, exp, bank, eval_split):
        c = exp.config.eval
        self.knn = registry.get("knn")(exp.config, settings=((c.knn_k, c.knn_temperature),))
        self.exp, self.batch_size = exp, c.batch_size
        self.bank, self.eval_split = bank, eval_split
        fn = make_feature_fn(exp.method.net, exp.mesh, exp.dtype)
        batch = max(c.batch_size // exp.mesh.devices.size, 1) * exp.mesh.devices.size
        self.resolution = bank.images.shape[1]
        lowered = fn.lower(exp.abstract_variables, jax.ShapeDtypeStruct(
            (batch, self.resolution, self.resolution, 3), jnp.uint8))
        self.feature_fn = lowered.compile()
        batches = sum(-(-len(d) // batch) for d in (bank, eval_split))
        self.flops = flops_of(lowered) * batches  # of one evaluation

    def __call__(self, state) -> float:
        """kNN top-1 accuracy of `state`'s backbone."""
        variables = {"params": state.params, "batch_stats": state.batch_stats}

        def extract():
            return tuple(SplitFeatures(extract_features(self.feature_fn, variables, d.images,
                                                        self.batch_size, self.exp.mesh),
                                       d.labels, self.bank.num_classes, normalized=True)
                         for d in (self.bank, self.eval_split))

        inputs = Inputs(self.exp.config, self.exp, variables, self.resolution, extract)
        return self.knn.run(inputs)[0]["top1"]
