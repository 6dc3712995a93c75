"""The jitted data-parallel step: 8 devices == 1 device; weight decay and its mask; the cache of
serialised steps."""
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental.compilation_cache import compilation_cache

from effssl_jax import optim, train
from effssl_jax.train_step import CompiledSteps, StepSpec, _prune, make_step_fn
from tiny import compiled_step, put_batch, step_parts, tiny_config, tiny_images


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
    assert m1["loss"] == pytest.approx(m8["loss"], rel=1e-5)


def test_flops_count_the_global_batch_once_on_any_number_of_devices():
    flops = []
    for devices in (jax.devices()[:1], jax.devices()):
        _, method, tx, mesh, abstract = step_parts(tiny_config(), devices)
        steps = CompiledSteps(lambda s: make_step_fn(method, tx, s, jnp.float32), mesh, abstract)
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
    assert plain["ha_selected_loss"] >= plain["ha_mean_loss"]


@pytest.fixture
def no_persistent_cache():
    """Compiles really compile: conftest enables XLA's persistent cache, whose hits are (rightly)
    not serialised."""
    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()  # JAX decides whether to use the cache once, at first use
    yield
    jax.config.update("jax_enable_compilation_cache", enabled)
    compilation_cache.reset_cache()


def test_serialised_steps_load_without_tracing_and_compute_the_same(tmp_path, no_persistent_cache):
    init, method, tx, mesh, abstract = step_parts(tiny_config(), jax.devices()[:1])
    traced = []

    def make(spec):
        traced.append(spec)
        return make_step_fn(method, tx, spec, jnp.float32)

    spec = StepSpec(16, 2, 8, 16, 16)
    steps = lambda fingerprint: CompiledSteps(make, mesh, abstract, str(tmp_path), fingerprint)
    first, second = steps("a"), steps("a")
    outputs = []
    for s in (first, second):
        state, metrics = s.get(spec)(init(jax.random.key(0)), put_batch(tiny_images(), mesh),
                                     np.float32(5.0))
        outputs.append((float(metrics["loss"]), jax.device_get(state.params)))
    assert traced == [spec]  # the second did not trace
    assert second.loaded == {spec} and not first.loaded
    assert second.flops == first.flops and first.flops[spec] > 0
    assert outputs[0][0] == outputs[1][0]
    for a, b in zip(*(jax.tree.leaves(o[1]) for o in outputs)):
        np.testing.assert_array_equal(a, b)
    other = steps("b")  # another config or source code: compiled anew
    other.get(spec)
    assert not other.loaded and len(traced) == 2
    for f in tmp_path.glob("*.pkl"):
        f.write_bytes(b"truncated")
    third = steps("a")
    third.get(spec)  # an unreadable entry is compiled again, not fatal
    assert not third.loaded and len(traced) == 3


def test_prefetched_steps_trace_in_the_callers_thread_and_keep_hard_augments_share(
        tmp_path, no_persistent_cache, monkeypatch):
    init, method, tx, mesh, abstract = step_parts(tiny_config(), jax.devices()[:1])
    threads, compile_threads = [], []
    compile_step = CompiledSteps._compile

    def recording_compile(self, *args):
        compile_threads.append(threading.current_thread())
        return compile_step(self, *args)

    monkeypatch.setattr(CompiledSteps, "_compile", recording_compile)

    def make(spec):
        threads.append(threading.current_thread())
        return make_step_fn(method, tx, spec, jnp.float32)

    spec = StepSpec(16, 3, 8, 16, 16)  # Hard Augment: 3 views scored at 8 px
    first = CompiledSteps(make, mesh, abstract, str(tmp_path), "a")
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
    second = CompiledSteps(make, mesh, abstract, str(tmp_path), "a")
    second.get(spec)
    assert second.loaded == {spec} and len(threads) == 2
    assert second.flops == first.flops and second.selection_flops == first.selection_flops
    for s in (first, second):
        s.close()


def test_steps_from_xlas_persistent_cache_are_not_serialised(tmp_path):
    """jaxlib 0.10 (CPU) serialises an executable that XLA's persistent cache supplied without
    its kernels, and the copy fails when a later process runs it: such steps are not written."""
    assert jax.config.jax_enable_compilation_cache, "conftest enables XLA's persistent cache"
    init, method, tx, mesh, abstract = step_parts(tiny_config(), jax.devices()[:1])
    make = lambda spec: make_step_fn(method, tx, spec, jnp.float32)
    spec = StepSpec(16, 2, 8, 16, 16)
    CompiledSteps(make, mesh, abstract).get(spec)  # compiled, and put in XLA's cache
    steps = CompiledSteps(make, mesh, abstract, str(tmp_path / "steps"), "a")
    state, metrics = steps.get(spec)(init(jax.random.key(0)), put_batch(tiny_images(), mesh),
                                     np.float32(5.0))
    assert np.isfinite(metrics["loss"]) and not steps.loaded
    assert not (tmp_path / "steps").exists() or not list((tmp_path / "steps").iterdir())


def test_xlas_persistent_cache_is_capped(tmp_path):
    """train.enable_compilation_cache bounds XLA's cache: JAX then keeps an access time next to
    each entry and evicts the least recently used ones beyond XLA_CACHE_BYTES."""
    suites_cache = jax.config.jax_compilation_cache_dir
    # JAX opens its cache once per process: a fresh one, whichever tests ran before in this worker.
    compilation_cache.reset_cache()
    try:
        train.enable_compilation_cache(str(tmp_path / "run"))
        assert jax.config.jax_compilation_cache_max_size == train.XLA_CACHE_BYTES
        jax.jit(lambda x: x * 3.0 + 1.0).lower(jnp.ones(7)).compile()
        cache = tmp_path / ".jax_cache"
        entries = {p.name.removesuffix("-cache") for p in cache.glob("*-cache")}
        assert entries and entries == {p.name.removesuffix("-atime") for p in cache.glob("*-atime")}
    finally:
        compilation_cache.reset_cache()
        jax.config.update("jax_compilation_cache_dir", suites_cache)


def test_entries_cached_without_the_cap_are_dated_so_that_new_ones_can_be_written(tmp_path):
    from jax._src.lru_cache import LRUCache
    (tmp_path / "old-cache").write_bytes(b"x" * 100)  # as written by a run without the cap
    os.utime(tmp_path / "old-cache", (1000, 1000))
    with pytest.raises(FileNotFoundError):  # what JAX hits on every write to such a cache
        LRUCache(str(tmp_path), max_size=150).put("new", b"y" * 100)
    train.date_undated_entries(str(tmp_path))
    assert int.from_bytes((tmp_path / "old-atime").read_bytes(), "little") == 1000 * 10**9
    LRUCache(str(tmp_path), max_size=150).put("new", b"y" * 100)  # evicts the older entry
    assert sorted(p.name for p in tmp_path.glob("*-cache")) == ["new-cache"]


def test_step_cache_keeps_the_most_recently_used_entries(tmp_path):
    for i, name in enumerate(["old", "mid", "new", "newest"]):
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 + i, 1000 + i))
    os.utime(tmp_path / "old.pkl", (2000, 2000))  # loaded lately: now the most recently used
    (tmp_path / "other.txt").write_bytes(b"x" * 1000)  # not an entry
    _prune(str(tmp_path), 250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newest.pkl", "old.pkl", "other.txt"]
    _prune(str(tmp_path), 10)  # the newest entry stays, even beyond the limit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.pkl", "other.txt"]


def test_evaluation_runs_every_few_epochs_and_at_the_end_unless_off():
    from effssl_jax import config_schema, plan as plan_lib
    c = config_schema.default_config()
    c.batch_size, c.epochs, c.eval.every_epochs = 100, 12, 5.0
    p = plan_lib.make_plan(c, 1000)  # 10 steps per epoch, 120 steps
    assert [s for s in range(1, 121) if train._eval_due(c, p, s)] == [50, 100, 120]
    c.epochs = 1  # shorter than the cadence: the trained network is still evaluated
    p = plan_lib.make_plan(c, 1000)
    assert [s for s in range(1, 11) if train._eval_due(c, p, s)] == [10]
    c.eval.every_epochs = 0
    assert not any(train._eval_due(c, p, s) for s in range(1, 11))
    c.eval.every_epochs = -1
    with pytest.raises(ValueError, match="every_epochs=-1.*0 turns"):
        config_schema.validate(c)


def test_flops_are_counted_where_lowered_cost_analysis_is_unimplemented(monkeypatch):
    """CUDA and TPU (PJRT plugins) raise NotImplementedError for Lowered.cost_analysis; their
    compiled executables' count leaves out cuDNN's convolutions. The HLO is then analysed on the
    CPU client: the same count, convolutions included."""
    from effssl_jax.train_step import flops_of
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
