"""ResNet backbones: shapes, parameter counts, init, and torchvision parity."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effssl_jax.models import cpu_conv, resnet
from effssl_jax.models.convert import from_torchvision, to_torchvision
from effssl_jax.models.cpu_conv import CONV_IMPLS
from effssl_jax.models.resnet import BACKBONES, feature_dim, get_backbone, resnet18

# torchvision's counts (resnet10: torchvision.models.ResNet(BasicBlock, [1, 1, 1, 1])).
TORCHVISION_PARAMS = {'resnet10': 5_418_792, 'resnet18': 11_689_512, 'resnet50': 25_557_032}


def _init(model, shape=(2, 64, 64, 3), seed=0):
    # Jitted: one compile, where eager ops would compile one program each (seconds on a CPU).
    return jax.jit(lambda key: model.init(key, jnp.zeros(shape), train=False))(jax.random.key(seed))


def _shapes(model, shape=(2, 64, 64, 3)):
    return jax.eval_shape(lambda: _init(model, shape))


def _n_params(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree['params']))


def _perturb_bn(variables, seed=0):
    """Non-trivial BN affine params and running stats, so swapped/ignored ones show up."""
    rng = np.random.RandomState(seed)

    def param(path, x):
        name, module = path[-1].key, path[-2].key
        if name == 'scale':
            return rng.uniform(0.5, 1.5, x.shape).astype(np.float32)
        if name == 'bias' and module != 'fc':
            return rng.normal(0, 0.1, x.shape).astype(np.float32)
        return x

    def stat(path, x):
        if path[-1].key == 'mean':
            return rng.normal(0, 0.1, x.shape).astype(np.float32)
        return rng.uniform(0.5, 1.5, x.shape).astype(np.float32)

    return {'params': jax.tree_util.tree_map_with_path(param, variables['params']),
            'batch_stats': jax.tree_util.tree_map_with_path(stat, variables['batch_stats'])}


def _torch_model(arch, variables):
    torch = pytest.importorskip('torch')
    torchvision = pytest.importorskip('torchvision')
    model = getattr(torchvision.models, arch)()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in to_torchvision(variables).items()},
                          strict=True)
    return model


def _images(shape=(2, 64, 64, 3), seed=1):
    return np.random.RandomState(seed).normal(size=shape).astype(np.float32)


def _assert_close(actual, expected, rtol=1e-4, what=''):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    err = np.abs(actual - expected).max() / np.abs(expected).max()
    assert err < rtol, f'{what} max abs error {err:.2e} relative to output scale'


@pytest.fixture(scope='module')
def r18_init():
    return _init(resnet18(num_classes=1000))


@pytest.fixture(scope='module')
def r18_variables(r18_init):
    return _perturb_bn(r18_init)


# --- shapes, counts, registry ----------------------------------------------------------

@pytest.mark.parametrize('arch', ['resnet10', 'resnet18', 'resnet50'])
def test_param_count_matches_torchvision(arch):
    assert _n_params(_shapes(BACKBONES[arch](num_classes=1000))) == TORCHVISION_PARAMS[arch]


@pytest.mark.parametrize('arch', ['resnet18', 'resnet50'])
def test_width_scales_params_and_features(arch):
    full = _n_params(_shapes(get_backbone(arch)))
    slim_model = get_backbone(arch, width=32)
    slim = _n_params(_shapes(slim_model))
    # Everything scales by exactly 1/4 except the stem conv (3 input channels) and BN (1/2).
    assert 0.249 < slim / full < 0.252
    out = jax.eval_shape(lambda v: slim_model.apply(v, jnp.zeros((2, 64, 64, 3)), train=False),
                         _shapes(slim_model))
    assert out.shape == (2, feature_dim(arch, 32))
    assert feature_dim(arch, 64) == {'resnet18': 512, 'resnet50': 2048}[arch]
    assert feature_dim(arch, 32) == feature_dim(arch, 64) // 2


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match=r"'nope'.*resnet18.*resnet50"):
        get_backbone('nope')
    with pytest.raises(ValueError, match='resnet18'):
        feature_dim('nope', 64)


def test_cifar_stem_keeps_resolution():
    model = resnet18(cifar_stem=True, width=16)
    x = jnp.zeros((2, 32, 32, 3))
    out, state = jax.eval_shape(
        lambda v: model.apply(v, x, train=False, capture_intermediates=True,
                              mutable=['intermediates']), _shapes(model, x.shape))
    inter = state['intermediates']
    assert inter['conv1']['__call__'][0].shape == (2, 32, 32, 16)
    assert inter['layer1_1']['__call__'][0].shape == (2, 32, 32, 16)  # no max-pool
    assert inter['layer4_1']['__call__'][0].shape == (2, 4, 4, 128)
    assert out.shape == (2, 128)
    assert 'fc' not in _shapes(model, x.shape)['params']

    imagenet_stem = resnet18(width=16)
    _, state = jax.eval_shape(
        lambda v: imagenet_stem.apply(v, x, train=False, capture_intermediates=True,
                                      mutable=['intermediates']), _shapes(imagenet_stem, x.shape))
    assert state['intermediates']['layer4_1']['__call__'][0].shape == (2, 1, 1, 128)


def test_bfloat16_compute_float32_params_and_output():
    model = resnet18(width=16, num_classes=10, dtype=jnp.bfloat16)
    variables = _shapes(model)
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    out, state = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((2, 64, 64, 3)), train=False,
                              capture_intermediates=True, mutable=['intermediates']), variables)
    assert state['intermediates']['layer2_0']['__call__'][0].dtype == jnp.bfloat16
    assert out.dtype == jnp.float32 and out.shape == (2, 10)


# --- conv_impl: im2col matmul == XLA conv ----------------------------------------------

def _conv_and_grads(impl, x, kernel, strides, padding, ct):
    conv = nn.Conv(kernel.shape[-1], kernel.shape[:2], strides, padding, use_bias=False,
                   conv_general_dilated=partial(cpu_conv.conv_general_dilated, impl=impl))
    def f(x, k, ct):
        y, vjp = jax.vjp(lambda x, k: conv.apply({'params': {'kernel': k}}, x), x, k)
        return (y, *vjp(ct))
    return jax.jit(f)(x, kernel, ct)


@pytest.mark.parametrize('k, stride, side', [
    (1, 1, 6), (1, 2, 7), (1, 2, 8),      # downsample convs, odd/even maps
    (3, 1, 5), (3, 1, 8), (3, 2, 7), (3, 2, 8),
    (3, 1, 2), (3, 1, 1), (3, 2, 3),      # maps smaller than the kernel
    (7, 2, 9), (7, 2, 12),                # stem
])
def test_conv_matmul_matches_xla_conv(k, stride, side):
    rng = np.random.RandomState(k * 100 + stride * 10 + side)
    x = rng.normal(size=(3, side, side, 5)).astype(np.float32)
    kernel = rng.normal(size=(k, k, 5, 6)).astype(np.float32)
    padding = resnet.torch_pad(k) if k > 1 else 'SAME'  # as ResNet calls nn.Conv
    out_side = (side + 2 * (k // 2) - k) // stride + 1
    ct = rng.normal(size=(3, out_side, out_side, 6)).astype(np.float32)
    expected = _conv_and_grads('xla', x, kernel, (stride, stride), padding, ct)
    actual = _conv_and_grads('matmul', x, kernel, (stride, stride), padding, ct)
    for name, a, e in zip(('output', 'd input', 'd kernel'), actual, expected):
        assert a.shape == e.shape, name
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5 * np.abs(e).max(), err_msg=name)


def test_max_pool_matmul_matches_nn_max_pool_with_ties():
    rng = np.random.RandomState(0)
    # After a ReLU many windows tie at 0: the gradient must go to the same (first) element.
    x = np.maximum(rng.normal(size=(2, 9, 8, 4)), 0).astype(np.float32)
    x[0, :3, :3] = 1.0  # a window of equal non-zero values, too
    ct = rng.normal(size=(2, 5, 4, 4)).astype(np.float32)

    def pool_and_grad(impl, x, ct):
        pool = lambda x: cpu_conv.max_pool(x, (3, 3), (2, 2), resnet.torch_pad(3), impl)
        y, vjp = jax.vjp(pool, x)
        return y, vjp(ct)[0]

    expected = jax.jit(partial(pool_and_grad, 'xla'))(x, ct)
    actual = jax.jit(partial(pool_and_grad, 'matmul'))(x, ct)
    np.testing.assert_array_equal(actual[0], expected[0])
    # Same elements get gradient (ties routed alike); where windows overlap the cotangents
    # may be summed in another order.
    np.testing.assert_array_equal(actual[1] != 0, expected[1] != 0)
    np.testing.assert_allclose(actual[1], expected[1], rtol=1e-6, atol=1e-7)


def test_conv_impl_auto_and_validation(monkeypatch):
    # On CPU, 'auto' takes the matmul on 2x2 maps, stride 2 and 1x1, XLA for 3x3 on big maps.
    assert cpu_conv._cpu_prefers_matmul((8, 2, 2, 64), (3, 3, 64, 64), (1, 1))
    assert cpu_conv._cpu_prefers_matmul((8, 8, 8, 64), (3, 3, 64, 128), (2, 2))
    assert cpu_conv._cpu_prefers_matmul((8, 8, 8, 64), (1, 1, 64, 128), (2, 2))
    assert not cpu_conv._cpu_prefers_matmul((8, 16, 16, 64), (3, 3, 64, 64), (1, 1))
    assert not cpu_conv._cpu_prefers_matmul((8, 64, 64, 3), (7, 7, 3, 64), (2, 2))  # stem
    assert cpu_conv._use_matmul('auto', True) == (jax.default_backend() == 'cpu')
    monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
    assert not cpu_conv._use_matmul('auto', True)
    assert cpu_conv._use_matmul('matmul', False) and not cpu_conv._use_matmul('xla', True)
    with pytest.raises(ValueError, match='conv_impl'):
        cpu_conv._use_matmul('cudnn', True)


def test_resnet18_matmul_equals_xla_outputs_stats_and_grads():
    # 40 px, ImageNet stem: maps 20 -> 10 -> 5 -> 3 -> 2, i.e. odd sizes, max-pool,
    # and the small maps where XLA:CPU's own conv is slowest.
    # ('auto' mixes the two; it runs in the torchvision parity tests above.)
    x = _images((2, 40, 40, 3), seed=3)
    models = {impl: resnet18(width=8, num_classes=10, conv_impl=impl) for impl in ('xla', 'matmul')}
    rng = np.random.RandomState(0)  # random fan-in-scaled leaves: a flax init compiles slowly
    variables = _perturb_bn(jax.tree.map(
        lambda s: (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(np.float32),
        _shapes(models['xla'], x.shape)))
    for impl in CONV_IMPLS:  # same parameter tree whatever the impl
        shapes = _shapes(resnet18(width=8, num_classes=10, conv_impl=impl), x.shape)
        assert jax.tree.map(np.shape, shapes) == jax.tree.map(np.shape, variables)

    def loss_and_grads(model):
        def loss(params):
            out, upd = model.apply({**variables, 'params': params}, x, train=True,
                                   mutable=['batch_stats'])
            return jnp.sum(out * np.arange(10)), (out, upd)
        return jax.jit(jax.grad(loss, has_aux=True))(variables['params'])

    expected_grads, (expected_out, expected_stats) = loss_and_grads(models['xla'])
    grads, (out, stats) = loss_and_grads(models['matmul'])
    _assert_close(out, expected_out, rtol=1e-5)
    for a, e in zip(jax.tree.leaves(stats), jax.tree.leaves(expected_stats)):
        _assert_close(a, e, rtol=1e-5)
    for (path, a), e in zip(jax.tree_util.tree_leaves_with_path(grads),
                            jax.tree.leaves(expected_grads)):
        _assert_close(a, e, rtol=1e-4, what=f'grad {jax.tree_util.keystr(path)}')


# --- initialisation ------------------------------------------------------------------

def test_init_like_torchvision(r18_init):
    variables = r18_init
    p = variables['params']
    # kaiming normal, fan_out: std = sqrt(2 / (k*k*out_channels)).
    for kernel in (p['conv1']['kernel'], p['layer4_1']['conv2']['kernel']):
        kh, kw, _, cout = kernel.shape
        expected = np.sqrt(2 / (kh * kw * cout))
        assert abs(float(np.std(kernel)) / expected - 1) < 0.03
        assert abs(float(np.mean(kernel))) < 0.05 * expected
    # torch Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    bound = 1 / np.sqrt(512)
    for leaf in (p['fc']['kernel'], p['fc']['bias']):
        assert np.abs(leaf).max() <= bound
        assert np.abs(leaf).max() > 0.95 * bound
    np.testing.assert_array_equal(p['bn1']['scale'], 1.0)
    np.testing.assert_array_equal(p['layer1_0']['bn2']['bias'], 0.0)
    np.testing.assert_array_equal(variables['batch_stats']['bn1']['mean'], 0.0)
    np.testing.assert_array_equal(variables['batch_stats']['bn1']['var'], 1.0)


@pytest.mark.parametrize('arch', ['resnet18', 'resnet50'])
def test_zero_init_residual_zeroes_the_bns_torchvision_does(arch):
    """torchvision's resnet(zero_init_residual=True) (SimSiam's builder asks for it): the same
    BN weights, by state_dict name, start at 0 (each block's last BN: bn2 in BasicBlock, bn3 in
    Bottleneck, not the shortcut's), every other BN weight at 1; off by default."""
    torchvision = pytest.importorskip('torchvision')
    theirs = getattr(torchvision.models, arch)(zero_init_residual=True).state_dict()
    bn_weights = lambda sd: {k: np.asarray(v) for k, v in sd.items()
                             if k.endswith('.weight') and np.asarray(v).ndim == 1}
    theirs = bn_weights(theirs)
    zeroed = {k for k, v in theirs.items() if not v.any()}
    assert zeroed and all(k.endswith(('bn2.weight', 'bn3.weight')) for k in zeroed)
    for zero_init in (True, False):
        model = get_backbone(arch, num_classes=1000, conv_impl='xla',
                             zero_init_residual=zero_init)
        ours = bn_weights(to_torchvision(_init(model, shape=(1, 32, 32, 3))))
        assert set(ours) == set(theirs)
        assert {k for k, v in ours.items() if not v.any()} == (zeroed if zero_init else set())
        assert all((v == 1).all() for k, v in ours.items() if k not in zeroed or not zero_init)


def test_backbone_from_config_passes_zero_init_residual():
    from effssl_jax import config_schema
    from effssl_jax.models import backbones
    c = config_schema.default_config()
    assert not backbones.from_config(c, jnp.float32).zero_init_residual
    c.model.zero_init_residual = True
    assert backbones.from_config(c, jnp.float32).zero_init_residual


# --- conversion ----------------------------------------------------------------------

def test_roundtrip_is_exact(r18_variables):
    sd = to_torchvision(r18_variables)
    assert sd['layer2.0.downsample.0.weight'].shape == (128, 64, 1, 1)
    assert sd['conv1.weight'].shape == (64, 3, 7, 7)
    assert sd['fc.weight'].shape == (1000, 512)
    assert sd['bn1.num_batches_tracked'].dtype == np.int64
    assert sd['bn1.num_batches_tracked'].ndim == 0
    back = from_torchvision(sd)
    assert jax.tree.structure(back) == jax.tree.structure(r18_variables)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(r18_variables)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_torchvision_state_dict_roundtrip():
    torchvision = pytest.importorskip('torchvision')
    sd = torchvision.models.resnet18().state_dict()
    back = to_torchvision(from_torchvision(sd))  # accepts torch tensors directly
    assert set(back) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)


# --- forward parity --------------------------------------------------------------------

@pytest.mark.parametrize('arch', ['resnet18', 'resnet50'])
def test_eval_forward_matches_torchvision(arch, r18_variables):
    torch = pytest.importorskip('torch')
    model = BACKBONES[arch](num_classes=1000)
    if arch == 'resnet18':
        variables = r18_variables
    else:  # start from torchvision's init: a flax init of resnet50 costs ~10 s of CPU compile
        torchvision = pytest.importorskip('torchvision')
        variables = _perturb_bn(from_torchvision(torchvision.models.resnet50().state_dict()))
        expected_shapes = _shapes(model)
        assert jax.tree.structure(variables) == jax.tree.structure(expected_shapes)
        for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(expected_shapes)):
            assert a.shape == b.shape
    tmodel = _torch_model(arch, variables).eval()
    x = _images()
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    _assert_close(jax.jit(partial(model.apply, train=False))(variables, x), expected)


def test_train_forward_and_running_stats_match_torchvision(r18_variables):
    torch = pytest.importorskip('torch')
    model = resnet18(num_classes=1000)
    tmodel = _torch_model('resnet18', r18_variables).train()
    x = _images(seed=2)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    out, updated = jax.jit(partial(model.apply, train=True, mutable=['batch_stats']))(
        r18_variables, x)
    _assert_close(out, expected)

    ours = to_torchvision({'params': r18_variables['params'], **updated})
    theirs = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    old = to_torchvision(r18_variables)
    # Elements per channel that each BN reduces over, for a 64x64 input with batch 2.
    side = {'bn1': 32, 'layer1': 16, 'layer2': 8, 'layer3': 4, 'layer4': 2}
    n_checked = 0
    for key in theirs:
        if key.endswith('running_mean'):
            _assert_close(ours[key], theirs[key], rtol=1e-5)
        if not key.endswith('running_var'):
            continue
        n = 2 * side[key.split('.')[0]] ** 2
        # torch updates running_var with the *unbiased* batch variance (n/(n-1));
        # flax uses the biased one (the one both use for normalising). So the
        # momentum-weighted new part differs by exactly n/(n-1).
        ours_new = ours[key] - 0.9 * old[key]
        theirs_new = theirs[key] - 0.9 * old[key]
        _assert_close(ours_new * n / (n - 1), theirs_new, rtol=1e-4)
        if n <= 8:  # layer4: the difference is large, not rounding noise
            assert np.abs(ours[key] / theirs[key] - 1).max() > 1e-3
        n_checked += 1
    assert n_checked == 20  # every BN layer of resnet18


def test_batch_stats_are_global_under_sharded_jit():
    if jax.device_count() < 2:
        pytest.skip('needs several (simulated) devices')
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from effssl_jax.models.resnet import ResNet

    model = ResNet(stage_sizes=(1,), block='basic', width=8, cifar_stem=True)
    n = jax.device_count()
    x = _images((2 * n, 8, 8, 3))
    variables = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(0))
    # Each device gets a different-looking shard, so per-shard stats would differ.
    x = x + np.arange(2 * n, dtype=np.float32)[:, None, None, None]
    mesh = Mesh(np.array(jax.devices()), ('data',))
    x_sharded = jax.device_put(x, NamedSharding(mesh, P('data')))
    step = lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'])
    out, stats = jax.jit(step)(variables, x_sharded)
    ref_out, ref_stats = jax.jit(step)(variables, x)  # one device
    _assert_close(out, ref_out, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(ref_stats)):
        _assert_close(a, b, rtol=1e-5)
