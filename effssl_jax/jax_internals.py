"""The one place that uses a private JAX name: XLA's cost analysis of an HLO module on a given
client. JAX offers it publicly only as `Lowered.cost_analysis()`, which backends behind a PJRT
plugin (CUDA, TPU) do not implement; costs.flops_of then analyses the same HLO on the CPU client.
A JAX upgrade that moves the name fails tests/test_adapters.py by name, not a run on a GPU.
"""
from __future__ import annotations

from jax._src.lib import _jax


def hlo_cost_analysis(client, hlo_module) -> dict:
    """XLA's cost analysis (a dict with 'flops', ...) of `hlo_module` on `client`
    (jax.extend.backend.get_backend(...))."""
    return _jax.hlo_module_cost_analysis(client, hlo_module)
