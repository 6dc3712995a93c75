"""The adapters of private library names (jax_internals.py, orbax_internals.py): each test fails
by name when an upgrade moves the name, instead of a run on a GPU or a resumed run failing."""
import jax
import jax.numpy as jnp
from jax.extend import backend as jax_backend

from effssl_jax import checkpoint, jax_internals, orbax_internals, run_record


def test_hlo_cost_analysis_on_the_cpu_client_counts_what_lowered_cost_analysis_counts():
    """costs.flops_of's path for GPU/TPU (which lack Lowered.cost_analysis), exercised on CPU."""
    lowered = jax.jit(lambda a, b: a @ b).lower(jnp.zeros((8, 16)), jnp.zeros((16, 4)))
    analysis = jax_internals.hlo_cost_analysis(jax_backend.get_backend("cpu"),
                                               lowered.compiler_ir("hlo").as_hlo_module())
    assert analysis["flops"] == lowered.cost_analysis()["flops"] == 2 * 8 * 16 * 4


def test_the_metadata_store_keeps_typed_prng_keys_typed(tmp_path):
    assert orbax_internals.array_metadata_store_of_default_handler() is not None
    state = {"rng": jax.random.key(3), "w": jnp.arange(4.0)}
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(1, state, run_record.RunRecord())
    ckpt.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])), state)
    restored, _ = ckpt.restore(abstract)
    ckpt.close()
    assert jax.dtypes.issubdtype(restored["rng"].dtype, jax.dtypes.prng_key)
    assert (jax.random.key_data(restored["rng"]) == jax.random.key_data(state["rng"])).all()
