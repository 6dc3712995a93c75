"""The one precision rule for what leaves a network: at least float32."""
from __future__ import annotations

import jax.numpy as jnp


def at_least_float32(x):
    """`x` in float32 if it was computed in a narrower float (bfloat16 under mixed precision), else
    unchanged: features, head outputs and losses stay float32 under bf16 and float64 in the
    float64 runs that check device layouts against each other (experiment.compute_dtype)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))
