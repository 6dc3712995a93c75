"""MoCo v3: its loss, gradients and heads against a PyTorch reference written from
facebookresearch/moco-v3 `moco/builder.py`, global negatives over 8 devices, the momentum
schedule of main_moco.py `adjust_moco_momentum` at hand-computed steps, and a tiny train step."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tiny import compiled_step, put_batch, tiny_config, tiny_images

from effssl_jax import config_schema
from effssl_jax.errors import ConfigError
from effssl_jax.methods import METHODS, MethodContext, mocov3, recipes
from effssl_jax.models import resnet

torch = pytest.importorskip("torch")
F = torch.nn.functional

B, FEAT, HIDDEN, D = 8, 12, 32, 16
STEPS_PER_EPOCH, TOTAL_STEPS = 4, 40
# float32 on both sides, values of order 1 (losses, unit-normalised logits / T, BN outputs): a
# few ulp of rounding from reductions done in another order, far below a wrong term's effect.
TOL = dict(rtol=1e-5, atol=1e-5)


def small_cfg(temperature=0.2):
    cfg = config_schema.default_config().mocov3
    cfg.update(proj_hidden=HIDDEN, proj_dim=D, pred_hidden=HIDDEN, temperature=temperature)
    return cfg


def make_method(cfg=None):
    backbone = resnet.get_backbone("resnet10", width=8, cifar_stem=True)
    ctx = MethodContext(backbone=backbone, feature_dim=64,
                        view_configs=mocov3.official_views(), dtype=jnp.float32,
                        steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL_STEPS)
    return METHODS["mocov3"](cfg or small_cfg(), ctx)


# --- PyTorch reference, as moco-v3 moco/builder.py -------------------------------------------

def torch_contrastive_loss(q, k, T, reduction="mean"):
    """MoCo.contrastive_loss on one process (concat_all_gather of one rank is the identity)."""
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    logits = torch.einsum("nc,mc->nm", [q, k]) / T
    labels = torch.arange(logits.shape[0], dtype=torch.long)
    return F.cross_entropy(logits, labels, reduction=reduction) * (2 * T)


def ref_mocov3(q1, q2, k1, k2, T, reduction="none"):
    """MoCo.forward after the encoders: ctr(q1, k2) + ctr(q2, k1), keys without gradient."""
    k1, k2 = k1.detach(), k2.detach()  # computed under torch.no_grad() by the momentum encoder
    return (torch_contrastive_loss(q1, k2, T, reduction)
            + torch_contrastive_loss(q2, k1, T, reduction))


def torch_build_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn=True):
    """MoCo._build_mlp."""
    mlp = []
    for layer in range(num_layers):
        dim1 = input_dim if layer == 0 else mlp_dim
        dim2 = output_dim if layer == num_layers - 1 else mlp_dim
        mlp.append(torch.nn.Linear(dim1, dim2, bias=False))
        if layer < num_layers - 1:
            mlp.append(torch.nn.BatchNorm1d(dim2))
            mlp.append(torch.nn.ReLU(inplace=True))
        elif last_bn:
            mlp.append(torch.nn.BatchNorm1d(dim2, affine=False))
    return torch.nn.Sequential(*mlp)


def copy_into_torch(params, mlp):
    """The flax MLP's kernels and BN affine parameters into the torch Sequential."""
    linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    bns = [m for m in mlp if isinstance(m, torch.nn.BatchNorm1d) and m.affine]
    for i, lin in enumerate(linears):
        lin.weight.data = torch.tensor(np.asarray(params[f"Dense_{i}"]["Dense_0"]["kernel"]).T)
    for i, bn in enumerate(bns):
        bn.weight.data = torch.tensor(np.asarray(params[f"BatchNorm_{i}"]["scale"]))
        bn.bias.data = torch.tensor(np.asarray(params[f"BatchNorm_{i}"]["bias"]))
    assert len(bns) == len(linears) - 1  # the last BN has no affine parameters


def random(seed, *shape, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


# --- loss and gradients ----------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.2, 1.0])  # the ViT and the ResNet-50 recipes' T
def test_loss_and_gradient_match_pytorch(temperature):
    method = make_method(small_cfg(temperature))
    qa, qb, ka, kb = (random(s, B, D) for s in range(4))
    loss = lambda qa, qb: method.pair_loss({"pred": qa}, {"pred": qb}, {"proj": ka},
                                           {"proj": kb}, {}, 0)
    per_sample = loss(qa, qb)
    grads = jax.grad(lambda qa, qb: loss(qa, qb).mean(), argnums=(0, 1))(qa, qb)

    tqa, tqb = (torch.tensor(x, requires_grad=True) for x in (qa, qb))
    tka, tkb = (torch.tensor(x, requires_grad=True) for x in (ka, kb))
    ref = ref_mocov3(tqa, tqb, tka, tkb, temperature)
    ref_mean = ref_mocov3(tqa, tqb, tka, tkb, temperature, reduction="mean")  # moco-v3's value
    ref_mean.backward()

    assert per_sample.shape == (B,) and float(jnp.std(per_sample)) > 1e-3
    np.testing.assert_allclose(per_sample, ref.detach().numpy(), **TOL)
    np.testing.assert_allclose(per_sample.mean(), ref_mean.item(), **TOL)
    np.testing.assert_allclose(grads[0], tqa.grad.numpy(), **TOL)
    np.testing.assert_allclose(grads[1], tqb.grad.numpy(), **TOL)
    # Stop-gradient into the keys, as the momentum encoder's no_grad.
    g_keys = jax.grad(lambda k: method.pair_loss({"pred": qa}, {"pred": qb}, {"proj": k},
                                                 {"proj": kb}, {}, 0).sum())(ka)
    assert float(jnp.abs(g_keys).max()) == 0.0 and tka.grad is None


def test_heads_and_their_gradients_match_moco_v3_build_mlp():
    """Projector (3 layers) -> predictor (2 layers) in train mode on two views' features, the
    loss against random keys, and its gradient w.r.t. every head parameter, against MoCo_ViT's
    heads with the same weights."""
    method = make_method()
    proj, pred = method.net.projector, method.net.predictor
    xa, xb = random(10, B, FEAT), random(11, B, FEAT)
    ka, kb = random(12, B, D), random(13, B, D)
    variables = {"proj": proj.init(jax.random.key(0), xa, train=False),
                 "pred": pred.init(jax.random.key(1), np.zeros((B, D), np.float32), train=False)}
    params = {k: v["params"] for k, v in variables.items()}

    def forward(params, x):
        z, _ = proj.apply({"params": params["proj"], **_stats(variables["proj"])}, x,
                          train=True, mutable=["batch_stats"])
        q, _ = pred.apply({"params": params["pred"], **_stats(variables["pred"])}, z,
                          train=True, mutable=["batch_stats"])
        return z, q

    def mean_loss(params):
        (_, qa), (_, qb) = forward(params, xa), forward(params, xb)
        return method.pair_loss({"pred": qa}, {"pred": qb}, {"proj": ka}, {"proj": kb},
                                {}, 0).mean()

    grads = jax.jit(jax.grad(mean_loss))(params)
    t_proj = torch_build_mlp(3, FEAT, HIDDEN, D)
    t_pred = torch_build_mlp(2, D, HIDDEN, D)  # MoCo_ViT's predictor keeps its last BN
    copy_into_torch(params["proj"], t_proj)
    copy_into_torch(params["pred"], t_pred)
    t_proj.train(), t_pred.train()
    tza, tzb = t_proj(torch.tensor(xa)), t_proj(torch.tensor(xb))
    tqa, tqb = t_pred(tza), t_pred(tzb)
    ref = ref_mocov3(tqa, tqb, torch.tensor(ka), torch.tensor(kb), 0.2, reduction="mean")
    ref.backward()

    za, qa = jax.jit(forward)(params, xa)
    np.testing.assert_allclose(za, tza.detach().numpy(), **TOL)
    np.testing.assert_allclose(qa, tqa.detach().numpy(), **TOL)
    np.testing.assert_allclose(jax.jit(mean_loss)(params), ref.item(), **TOL)
    for name, t_mlp in (("proj", t_proj), ("pred", t_pred)):
        linears = [m for m in t_mlp if isinstance(m, torch.nn.Linear)]
        bns = [m for m in t_mlp if isinstance(m, torch.nn.BatchNorm1d) and m.affine]
        for i, lin in enumerate(linears):
            np.testing.assert_allclose(grads[name][f"Dense_{i}"]["Dense_0"]["kernel"],
                                       lin.weight.grad.numpy().T, **TOL)
        for i, bn in enumerate(bns):
            np.testing.assert_allclose(grads[name][f"BatchNorm_{i}"]["scale"],
                                       bn.weight.grad.numpy(), **TOL)
            np.testing.assert_allclose(grads[name][f"BatchNorm_{i}"]["bias"],
                                       bn.bias.grad.numpy(), **TOL)
        assert float(np.abs(linears[0].weight.grad.numpy()).max()) > 1e-4  # real gradients


def _stats(variables):
    return {"batch_stats": variables["batch_stats"]}


def test_keys_are_global_over_8_devices():
    """The keys of all 8 devices are every query's negatives (moco-v3's concat_all_gather):
    the sharded loss equals the one-device loss and differs from per-device negatives."""
    assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
    method = make_method()
    qa, qb, ka, kb = (random(20 + s, 16, D) for s in range(4))
    loss = lambda qa, qb, ka, kb: method.pair_loss({"pred": qa}, {"pred": qb}, {"proj": ka},
                                                   {"proj": kb}, {}, 0)

    def sharded(devices):
        put = lambda x: jax.device_put(x, NamedSharding(Mesh(np.asarray(devices), ("data",)),
                                                        P("data")))
        return jax.device_get(jax.jit(loss)(*map(put, (qa, qb, ka, kb))))

    one, eight = sharded(jax.devices()[:1]), sharded(jax.devices())
    np.testing.assert_allclose(eight, one, **TOL)
    ref = ref_mocov3(*map(torch.tensor, (qa, qb, ka, kb)), 0.2)
    np.testing.assert_allclose(one, ref.numpy(), **TOL)
    local = np.concatenate([loss(qa[i:i + 2], qb[i:i + 2], ka[i:i + 2], kb[i:i + 2])
                            for i in range(0, 16, 2)])
    assert np.abs(local - one).max() > 0.1


# --- momentum encoder ------------------------------------------------------------------------

def adjust_moco_momentum(epoch, epochs, moco_m):
    """main_moco.py: m = 1 - 0.5 * (1 + cos(pi * epoch / epochs)) * (1 - moco_m)."""
    return 1. - 0.5 * (1. + math.cos(math.pi * epoch / epochs)) * (1. - moco_m)


@pytest.mark.parametrize("step, tau", [
    (0, 0.99),                  # start: the base momentum
    (10, 0.9914644660940673),   # a quarter: 1 - 0.01 * (1 + cos(pi / 4)) / 2
    (20, 0.995),                # half-way
    (30, 0.9985355339059327),   # three quarters: 1 - 0.01 * (1 - cos(pi / 4)) / 2
    (40, 1.0),                  # end
])
def test_momentum_schedule_hand_values(step, tau):
    schedule = make_method().ema_schedule
    assert float(schedule(step)) == pytest.approx(tau, abs=1e-7)
    # main_moco.py evaluates it at the fractional epoch epoch + i / iters_per_epoch.
    ref = adjust_moco_momentum(step / STEPS_PER_EPOCH, TOTAL_STEPS / STEPS_PER_EPOCH, 0.99)
    assert float(schedule(step)) == pytest.approx(ref, abs=1e-7)


def test_networks_target_and_views():
    """The online net is backbone + projector + predictor, the momentum encoder backbone +
    projector (the EMA'd sub-tree), no biases anywhere in the heads; BYOL's views by default."""
    method = make_method()
    x = jnp.zeros((2, 16, 16, 3))
    params = jax.eval_shape(lambda: method.net.init(jax.random.key(0), x, train=False))["params"]
    target = jax.eval_shape(lambda: method.target_net.init(jax.random.key(0), x,
                                                           train=False))["params"]
    assert set(params) == {"backbone", "projector", "predictor"}
    assert set(target) == {"backbone", "projector"}
    for head, layers in (("projector", 3), ("predictor", 2)):
        flat = jax.tree_util.tree_flatten_with_path(params[head])[0]
        names = {jax.tree_util.keystr(p) for p, _ in flat}
        assert not any("bias" in n and "Dense" in n for n in names)
        assert sum("kernel" in n for n in names) == layers
        assert sum("BatchNorm" in n and "scale" in n for n in names) == layers - 1
    # main_moco.py:261-285 (moco-v3 c349e6e): BYOL's recipe; the default config picks it.
    v1, v2 = recipes.view_configs("mocov3", config_schema.default_config().augment)
    assert (v1.blur_prob, v1.solarize_prob, v2.blur_prob, v2.solarize_prob) == (1.0, 0.0, 0.1, 0.2)
    for v in (v1, v2):
        assert (v.crop_scale, v.brightness, v.contrast, v.saturation, v.hue) == (
            (0.08, 1.0), 0.4, 0.4, 0.2, 0.1)


def test_config_defaults_and_validation():
    c = config_schema.default_config()
    assert dict(c.mocov3) == dict(proj_hidden=4096, proj_dim=256, pred_hidden=4096,
                                  temperature=0.2, tau_base=0.99)
    c.method = "mocov3"
    config_schema.validate(c)
    c.mocov3.temperature = 0.0
    with pytest.raises(ConfigError, match="mocov3.temperature"):
        config_schema.validate(c)


# --- train step ------------------------------------------------------------------------------

def test_tiny_train_step_with_adamw_f1clr():
    """Two real steps of a tiny ResNet with MoCo v3 under AdamW + F1-CLR (the ViT recipe's
    optimizer): finite loss, the logged lr / beta1 / momentum-encoder tau at step 0, and a
    momentum encoder that moves towards the online network."""
    c = tiny_config("mocov3")
    c.mocov3.update(proj_hidden=32, proj_dim=16, pred_hidden=32)
    c.optim.update(optimizer="adamw", schedule="f1clr", warmup_epochs=1.0, lr=1e-3,
                   weight_decay=0.05)
    config_schema.validate(c)
    state, step, mesh, method = compiled_step(c, jax.devices()[:1])
    target0 = jax.device_get(state.target_params)
    images = put_batch(tiny_images(), mesh)
    for k in range(2):
        state, metrics = step(state, images, np.float32(5.0))
        metrics = jax.device_get(metrics)
        assert np.isfinite(metrics["loss"]) and metrics["loss"] > 0 and metrics["healthy"]
        assert metrics["ema_tau"] == pytest.approx(float(method.ema_schedule(k)), abs=1e-7)
    # Step 1 of 8 (2 epochs of 4 steps), warm-up 4 steps: eq. 8 at t = 1.
    half_cos = (math.cos(math.pi * 1 / 4) + 1) / 2
    assert metrics["lr"] == pytest.approx(1e-3 * (1 - half_cos), rel=1e-5)
    assert metrics["momentum"] == pytest.approx(0.85 + 0.1 * half_cos, rel=1e-6)
    assert metrics["weight_decay"] == pytest.approx(0.05)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(jax.device_get(state.target_params)), jax.tree.leaves(target0)))
    assert moved > 0
