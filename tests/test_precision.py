"""Mixed precision: --config.dtype=bfloat16 computes convolutions and matmuls in bf16 while
params, batch-norm statistics, optimizer state and the loss stay float32."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import compiled_step, put_batch, tiny_config, tiny_experiment, tiny_images

from effssl_jax import config_schema, optim
from effssl_jax.experiment import compute_dtype
from effssl_jax.step import StepSpec, create_state, make_step_fn


def _step(dtype):
    """(StableHLO of the step as lowered, its metrics, the new state)."""
    config = tiny_config()
    state, step, mesh, method = compiled_step(config, jax.devices()[:1], dtype=dtype)
    images = put_batch(tiny_images(), mesh)
    # The lowered program: what the step asks for. (XLA:CPU then runs bf16 dots/convs in f32
    # on rounded operands, so the optimized HLO is f32 there; GPUs/TPUs keep bf16.)
    tx = optim.sgd(lambda s: 0.1, lambda s: 0.9, 0.0, False)
    spec = StepSpec(16, 2, 8, 16, config.batch_size)
    shapes = jax.eval_shape(lambda: create_state(method, tx, jax.random.key(0), 16))
    hlo = jax.jit(make_step_fn(method, tx, spec, dtype)).lower(
        shapes, images, np.float32(5.0)).as_text()
    new_state, metrics = step(state, images, np.float32(5.0))
    return hlo, jax.device_get(metrics), jax.device_get(new_state)


def _compute_types(hlo: str) -> list[str]:
    """Result element types of the convolutions and matmuls in StableHLO text."""
    return re.findall(r"stablehlo\.(?:convolution|dot_general).*-> tensor<[^>]*x(\w+)>", hlo)


def test_bfloat16_step_computes_in_bf16_and_matches_float32():
    hlo32, m32, s32 = _step(jnp.float32)
    hlo16, m16, s16 = _step(jnp.bfloat16)

    # The bf16 step really computes in bf16: most of its convolutions and matmuls produce bf16
    # (the rest: the float32 heads' output layers and the loss); the float32 step has none.
    ops16, ops32 = _compute_types(hlo16), _compute_types(hlo32)
    assert len(ops16) == len(ops32) > 20, "convolutions/matmuls not found in the lowered step"
    assert ops16.count("bf16") >= 0.8 * len(ops16), ops16
    assert "bf16" not in ops32, ops32

    # ... while everything that is kept stays float32.
    for tree in (s16.params, s16.batch_stats, s16.opt_state):
        for leaf in jax.tree.leaves(tree):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float32
    assert m16["loss"].dtype == np.float32

    # Same loss up to bf16 rounding: the loss (-0.024) is a mean of cosines of size ~1, each
    # carrying bf16's relative error (eps 2**-8), so the bound is absolute, at that scale.
    assert np.isfinite(m16["loss"])
    assert m16["loss"] == pytest.approx(m32["loss"], abs=2**-8)
    assert m16["grad_norm"] == pytest.approx(m32["grad_norm"], rel=0.1)
    assert m16["loss"] != m32["loss"]  # it did not silently run in float32


def test_compute_dtype_names():
    assert compute_dtype("bfloat16") == jnp.bfloat16
    assert compute_dtype("float32") == jnp.float32
    assert compute_dtype("auto") == (jnp.float32 if jax.default_backend() == "cpu"
                                     else jnp.bfloat16)
    assert "bfloat16" in config_schema.DTYPES


def test_float64_needs_64_bit_jax_and_keeps_parameters_in_float64():
    with pytest.raises(config_schema.ConfigError, match="needs 64-bit JAX"):
        compute_dtype("float64")
    with jax.enable_x64(True):
        assert compute_dtype("float64") == jnp.float64
        state = tiny_experiment(tiny_config(), jax.devices()[:1], jnp.float64).abstract_state
        assert {x.dtype for x in jax.tree.leaves((state.params, state.batch_stats))} == {
            jnp.dtype(jnp.float64)}
