"""The jitted data-parallel step: 8 devices == 1 device; weight decay and its mask; compiling
ahead of time; JAX's persistent cache; FLOP counts."""
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental.compilation_cache import compilation_cache
from tiny import compiled_step, put_batch, tiny_config, tiny_experiment, tiny_images

from effssl_jax import compile as compile_lib
from effssl_jax import optim, train
from effssl_jax.compile import CompiledSteps, flops_of
from effssl_jax.step import StepSpec


def _one_step(config, devices, dtype):
    state, step, mesh, _ = compiled_step(config, devices, dtype=dtype)
    init = jax.device_get(state.params)
    state, metrics = step(state, put_batch(tiny_images(), mesh), np.float32(5.0))
    return jax.device_get(metrics), jax.device_get(state), init


def test_eight_devices_equal_one_device():
    assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
    config = tiny_config()
    # Computed in float64: in float32 the BN backward on 2x2 maps amplifies the rounding of
    # reductions done in another order to ~2% of an update, which would hide a real difference.
    with jax.enable_x64(True):
        (m1, s1, init), (m8, s8, _) = (_one_step(config, d, jnp.float64)
                                       for d in (jax.devices()[:1], jax.devices()))
    # Same augmentations and global batch-norm statistics: the same loss (float32: a mean of
    # cosines of size ~1, summed in another order on 8 devices, hence the absolute 1e-7).
    assert m1["loss"] == pytest.approx(m8["loss"], rel=1e-6, abs=1e-7)
    assert np.isfinite(m1["loss"]) and m1["grad_norm"] > 0
    assert m1["grad_norm"] == pytest.approx(m8["grad_norm"], rel=1e-5)
    for a, b, p0 in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params),
                        jax.tree.leaves(init)):
        assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(a - p0) + 1e-9
    for a, b in zip(jax.tree.leaves(s1.batch_stats), jax.tree.leaves(s8.batch_stats)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
    assert int(s8.step) == 1


def test_eight_devices_float32_loss():
    config = tiny_config()
    (m1, *_), (m8, *_) = (_one_step(config, d, jnp.float32)
                          for d in (jax.devices()[:1], jax.devices()))
    # A mean of cosines of size ~1 summed in another order: float32 rounding, absolute.
    assert m1["loss"] == pytest.approx(m8["loss"], rel=1e-5, abs=1e-6)


def test_flops_count_the_global_batch_once_on_any_number_of_devices():
    flops = []
    for devices in (jax.devices()[:1], jax.devices()):
        steps = tiny_experiment(tiny_config(), devices).compiled_steps()
        spec = StepSpec(16, 2, 8, 16, 16)
        steps.get(spec)
        steps.close()
        flops.append(steps.flops[spec])
    assert flops[0] == flops[1] > 0


def test_step_changes_params_and_is_deterministic():
    config = tiny_config()
    images = tiny_images()
    out = []
    for _ in range(2):
        state, step, mesh, _ = compiled_step(config, jax.devices()[:1])
        before = jax.device_get(state.params)
        state, metrics = step(state, put_batch(images, mesh), np.float32(5.0))
        out.append((float(metrics["loss"]), jax.device_get(state.params)))
    assert out[0][0] == out[1][0]
    moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(before),
                                                 jax.tree.leaves(out[0][1]))]
    assert max(moved) > 0


def test_weight_decay_changes_update_only_where_masked():
    params = {"conv": {"kernel": jnp.ones((3, 3))}, "bn": {"scale": jnp.ones(3),
                                                          "bias": jnp.ones(3)}}
    grads = jax.tree.map(jnp.zeros_like, params)
    lr = lambda s: 0.1
    mom = lambda s: 0.9
    for decay_all in (False, True):
        tx = optim.sgd(lr, mom, 0.5, decay_all)
        updates, state = tx.update(grads, tx.init(params), params)
        # zero gradient: the whole update is -lr * wd * param where decayed
        np.testing.assert_allclose(updates["conv"]["kernel"], -0.05)
        expected_bn = -0.05 if decay_all else 0.0
        np.testing.assert_allclose(updates["bn"]["scale"], expected_bn)
        np.testing.assert_allclose(updates["bn"]["bias"], expected_bn)
        assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.1)
        assert float(state.hyperparams["momentum"]) == pytest.approx(0.9)


def test_momentum_schedule_drives_sgd_like_pytorch():
    # buf_t = m_t * buf_{t-1} + g_t ; p -= lr_t * buf_t, with per-step momentum and lr
    lrs, moms = [0.1, 0.2, 0.3], [0.0, 0.5, 0.9]
    tx = optim.sgd(lambda s: jnp.asarray(lrs)[s], lambda s: jnp.asarray(moms)[s], 0.0, False)
    p = {"w": {"kernel": jnp.array([1.0])}}
    state = tx.init(p)
    buf, expected = 0.0, 1.0
    for t, g in enumerate([1.0, 2.0, 3.0]):
        updates, state = tx.update({"w": {"kernel": jnp.array([g])}}, state, p)
        p = optax.apply_updates(p, updates)
        buf = moms[t] * buf + g
        expected -= lrs[t] * buf
        assert float(p["w"]["kernel"][0]) == pytest.approx(expected, rel=1e-6)


def test_gradient_clipping_scales_the_global_norm_like_torch():
    # torch.nn.utils.clip_grad_norm_(max_norm=1): g * 1 / (||g|| + 1e-6) when ||g|| > 1, else g
    p = {"a": {"kernel": jnp.zeros(2)}, "b": {"kernel": jnp.zeros(1)}}
    tx = optim.sgd(lambda s: 1.0, lambda s: 0.0, 0.0, False, clip_grad_norm=1.0)
    for g, scale in (([3.0, 0.0], [4.0]), 1 / 5), (([0.3, 0.0], [0.4]), 1.0):
        grads = {"a": {"kernel": jnp.array(g[0])}, "b": {"kernel": jnp.array(g[1])}}
        updates, _ = tx.update(grads, tx.init(p), p)
        np.testing.assert_allclose(updates["a"]["kernel"], -scale * np.array(g[0]), rtol=1e-5)
        np.testing.assert_allclose(updates["b"]["kernel"], -scale * np.array(g[1]), rtol=1e-5)


def test_hard_augment_extra_targets_add_to_the_loss():
    config = tiny_config()
    losses = []
    for extra in (False, True):
        state, step, mesh, _ = compiled_step(config, jax.devices()[:1], num_views=3,
                                             extra_targets=extra)
        _, metrics = step(state, put_batch(tiny_images(), mesh), np.float32(5.0))
        losses.append(jax.device_get(metrics))
    plain, extra = losses
    # Same selection (same key, same params); the extra targets change only the trained loss.
    assert plain["ha_selected_loss"] == pytest.approx(extra["ha_selected_loss"], rel=1e-6)
    assert np.isfinite(extra["loss"]) and extra["loss"] != pytest.approx(plain["loss"], abs=1e-4)


def test_prefetched_steps_trace_in_the_callers_thread_and_keep_hard_augments_share(monkeypatch):
    exp = tiny_experiment(tiny_config())
    threads, compile_threads = [], []
    compile_step = CompiledSteps._compile

    def recording_compile(self, *args):
        compile_threads.append(threading.current_thread())
        return compile_step(self, *args)

    monkeypatch.setattr(CompiledSteps, "_compile", recording_compile)

    def make(spec):
        threads.append(threading.current_thread())
        return exp.step_fn(spec)

    spec = StepSpec(16, 3, 8, 16, 16)  # Hard Augment: 3 views scored at 8 px
    first = CompiledSteps(make, exp.mesh, exp.abstract_state)
    first.prefetch(spec)
    first.prefetch(spec)
    step = first.get(spec)
    assert first.get(spec) is step and first.compile_count == 1
    # Traced twice (the step, and without selection for the FLOP share), both in this thread,
    # where its JAX config (thread-local: jax.enable_x64() and the like) applies; only XLA's
    # compile runs on the compile thread.
    assert threads == [threading.current_thread()] * 2
    assert len(compile_threads) == 1 and compile_threads[0] is not threading.current_thread()
    assert 0 < first.selection_flops[spec] < 0.5 * first.flops[spec]
    first.close()


def test_xlas_persistent_cache_is_capped(tmp_path, monkeypatch):
    """compile.enable_persistent_cache bounds XLA's cache: JAX then keeps an access time next to
    each entry and evicts the least recently used ones beyond XLA_CACHE_BYTES."""
    suites_cache = jax.config.jax_compilation_cache_dir
    # JAX opens its cache once per process: a fresh one, whichever tests ran before in this worker.
    compilation_cache.reset_cache()
    try:
        with monkeypatch.context() as m:  # JAX's own variable wins over the workdir's folder
            m.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "elsewhere"))
            compile_lib.enable_persistent_cache(str(tmp_path / "run"))
            assert jax.config.jax_compilation_cache_dir == str(tmp_path / "elsewhere")
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
        compile_lib.enable_persistent_cache(str(tmp_path / "run"))
        assert jax.config.jax_compilation_cache_max_size == compile_lib.XLA_CACHE_BYTES
        jax.jit(lambda x: x * 3.0 + 1.0).lower(jnp.ones(7)).compile()
        cache = tmp_path / ".jax_cache"
        entries = {p.name.removesuffix("-cache") for p in cache.glob("*-cache")}
        assert entries and entries == {p.name.removesuffix("-atime") for p in cache.glob("*-atime")}
    finally:
        compilation_cache.reset_cache()
        jax.config.update("jax_compilation_cache_dir", suites_cache)


def test_evaluation_runs_every_few_epochs_and_at_the_end_unless_off():
    from effssl_jax import config_schema
    from effssl_jax import plan as plan_lib
    c = config_schema.default_config()
    c.batch_size, c.epochs, c.eval.every_epochs = 100, 12, 5.0
    p = plan_lib.make_plan(c, 1000)  # 10 steps per epoch, 120 steps
    due = lambda s: train._eval_due(c, p, s)
    assert [s for s in range(1, 121) if due(s)] == [50, 100, 120]
    c.batch_size, c.epochs, c.eval.every_epochs = 128, 5, 2.5  # 73 steps per epoch, 365 steps
    p = plan_lib.make_plan(c, 9469)
    assert [s for s in range(1, 366) if due(s)] == [182, 365]  # one evaluation at the end
    c.epochs, c.eval.every_epochs = 100, 12.5  # 912.5 steps apart: no drift from rounding
    p = plan_lib.make_plan(c, 9469)
    assert [s for s in range(1, 7301) if due(s)] == [912, 1825, 2738, 3650, 4562, 5475, 6388,
                                                     7300]
    c.batch_size, c.eval.every_epochs = 100, 5.0
    c.epochs = 1  # shorter than the cadence: the trained network is still evaluated
    p = plan_lib.make_plan(c, 1000)
    assert [s for s in range(1, 11) if due(s)] == [10]
    c.eval.every_epochs = 0
    assert not any(due(s) for s in range(1, 11))
    c.eval.every_epochs = -1
    with pytest.raises(ValueError, match="every_epochs=-1.*0 turns"):
        config_schema.validate(c)


def test_flops_are_counted_where_lowered_cost_analysis_is_unimplemented(monkeypatch):
    """CUDA and TPU (PJRT plugins) raise NotImplementedError for Lowered.cost_analysis; their
    compiled executables' count leaves out cuDNN's convolutions. The HLO is then analysed on the
    CPU client: the same count, convolutions included."""
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    lowered = conv.lower(jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 8)))
    valid_taps = sum(min(i + 2, 6) - max(i - 1, 0) for i in range(6)) ** 2  # per in/out channel
    expected = 2 * 2 * valid_taps * 4 * 8  # XLA counts the taps that fall inside the map
    assert flops_of(lowered) == expected

    def unimplemented(self):
        raise NotImplementedError("Lowered.cost_analysis not implemented on platform 'cuda'")

    monkeypatch.setattr(type(lowered), "cost_analysis", unimplemented)
    assert flops_of(lowered) == expected
