"""SSL methods: per-sample losses and gradients against PyTorch references written from each
method's paper / official code (solo-learn, DINO), state updates against Python simulations,
global negatives over 8 devices, Hard Augment selection, EMA, and the networks' wiring."""
import dataclasses
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from test_mocov3 import ref_mocov3 as ref_mocov3_pairs  # moco-v3's loss, in torch

from effssl_jax import augment, config_schema, hard_augment, optim, schedules
from effssl_jax.methods import METHODS, MethodContext, byol
from effssl_jax.methods import dino as dino_lib
from effssl_jax.models import resnet
from effssl_jax.step import StepSpec, create_state, make_step_fn

torch = pytest.importorskip("torch")
F = torch.nn.functional

B, D, PROTOS, QUEUE = 8, 16, 32, 24
STEPS_PER_EPOCH, TOTAL_STEPS = 4, 40
STEP = 3  # inside DINO's teacher-temperature warm-up (1 epoch = 4 steps here)
TOL = dict(rtol=1e-5, atol=1e-5)


def small_config():
    c = config_schema.default_config()
    c.simsiam.proj_dim, c.simsiam.proj_layers, c.simsiam.pred_hidden = D, 2, 8
    c.byol.proj_hidden = c.byol.pred_hidden = 32
    c.byol.proj_dim = D
    c.simclr.proj_hidden, c.simclr.proj_dim = 32, D
    c.mocov2plus.proj_hidden, c.mocov2plus.proj_dim, c.mocov2plus.queue_size = 32, D, QUEUE
    c.dino.proj_hidden, c.dino.bottleneck_dim, c.dino.num_prototypes = 32, 8, PROTOS
    c.dino.warmup_teacher_temperature_epochs = 2
    c.mocov3.proj_hidden = c.mocov3.pred_hidden = 32
    c.mocov3.proj_dim = D
    return c


def context(backbone=None, views=(augment.ViewConfig(), augment.ViewConfig())):
    if backbone is None:
        backbone = resnet.get_backbone("resnet10", width=8, cifar_stem=True)
    return MethodContext(backbone=backbone, feature_dim=64, view_configs=views,
                         dtype=jnp.float32, steps_per_epoch=STEPS_PER_EPOCH,
                         total_steps=TOTAL_STEPS)


CONFIG = small_config()
METHOD = {name: make(CONFIG[name], context()) for name, make in METHODS.items()}


def embeddings(name, seed, views=None):
    """Random online/target outputs with the keys `name`'s loss reads; leading view axis if
    `views`, else a pair (a, b)."""
    rng = np.random.default_rng(seed)
    shape = (views or 2, B)
    vec = lambda dim, scale=1.0: (scale * rng.standard_normal(shape + (dim,))).astype(np.float32)
    if name == "simsiam":
        online, target = {"proj": vec(D), "pred": vec(D)}, None
    elif name in ("byol", "mocov3"):
        online, target = {"proj": vec(D), "pred": vec(D)}, {"proj": vec(D)}
    elif name == "simclr":
        online, target = {"proj": vec(D)}, None
    elif name == "mocov2plus":
        online, target = {"proj": vec(D)}, {"proj": vec(D)}
    else:  # dino logits
        online, target = {"proj": vec(PROTOS, 3.0)}, {"proj": vec(PROTOS, 0.3)}
    if views:
        return online, target
    split = lambda t: (None, None) if t is None else tuple({k: v[i] for k, v in t.items()}
                                                           for i in range(2))
    return split(online) + split(target)


def method_state(name, seed=0):
    """Non-trivial state: MoCo's random initial queue, DINO with a non-zero centre."""
    state = METHOD[name].init_state()
    if name == "dino":
        state = {"center": jnp.asarray(np.random.default_rng(seed).standard_normal(PROTOS),
                                       jnp.float32) * 0.1}
    return state


# --- PyTorch references, written from the papers / official code ------------------------------

def t(x):
    return torch.tensor(np.asarray(x), requires_grad=True)


def ref_simsiam(oa, ob, ta, tb, state, step):  # SimSiam Alg. 1: L = D(p1, z2)/2 + D(p2, z1)/2
    d = lambda p, z: -F.cosine_similarity(p, z.detach(), dim=-1)
    return 0.5 * (d(oa["pred"], ob["proj"]) + d(ob["pred"], oa["proj"]))


def ref_byol(oa, ob, ta, tb, state, step):  # solo-learn byol_loss_func, summed over directions
    f = lambda p, z: 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)
    return f(oa["pred"], tb["proj"]) + f(ob["pred"], ta["proj"])


def ref_simclr(oa, ob, ta, tb, state, step):
    """SimCLR's l(i, j) for every anchor (eq. 1), as a cross-entropy over the 2B - 1 others."""
    z = F.normalize(torch.cat([oa["proj"], ob["proj"]]), dim=-1)
    sim = z @ z.T / CONFIG.simclr.temperature
    n = z.shape[0]
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    positive = torch.cat([torch.arange(n // 2, n), torch.arange(n // 2)])
    per_anchor = F.cross_entropy(sim, positive, reduction="none")
    return 0.5 * (per_anchor[: n // 2] + per_anchor[n // 2:])


def ref_simclr_solo(z1, z2, temperature):
    """solo-learn's simclr_loss_func (one process): the mean over the 2B anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    sim = torch.exp(z @ z.T / temperature)
    indexes = torch.arange(z1.shape[0]).repeat(2).unsqueeze(0)
    pos_mask = indexes.t() == indexes
    pos_mask.fill_diagonal_(0)
    neg_mask = indexes.t() != indexes
    pos, neg = torch.sum(sim * pos_mask, 1), torch.sum(sim * neg_mask, 1)
    return -torch.mean(torch.log(pos / (pos + neg)))


def ref_mocov2plus(oa, ob, ta, tb, state, step):
    """solo-learn MoCoV2Plus.training_step + mocov2plus_loss_func (queue layout [2, D, K])."""
    def moco(query, key, queue, temperature):
        pos = torch.einsum("nc,nc->n", [query, key]).unsqueeze(-1)
        neg = torch.einsum("nc,ck->nk", [query, queue])
        logits = torch.cat([pos, neg], dim=1) / temperature
        return F.cross_entropy(logits, torch.zeros(query.size(0), dtype=torch.long),
                               reduction="none")
    q1, q2 = F.normalize(oa["proj"], dim=-1), F.normalize(ob["proj"], dim=-1)
    with torch.no_grad():
        k1, k2 = F.normalize(ta["proj"], dim=-1), F.normalize(tb["proj"], dim=-1)
    queue = torch.tensor(np.asarray(state["queue"])).permute(0, 2, 1)
    temp = CONFIG.mocov2plus.temperature
    return (moco(q1, k2, queue[1], temp) + moco(q2, k1, queue[0], temp)) / 2


def ref_dino(oa, ob, ta, tb, state, step):
    """DINOLoss.forward of the DINO repo / solo-learn, per sample (2 global crops)."""
    c = CONFIG.dino
    epoch_temp = np.interp(step, [0, c.warmup_teacher_temperature_epochs * STEPS_PER_EPOCH],
                           [c.warmup_teacher_temperature, c.teacher_temperature])
    student_out = (torch.cat([oa["proj"], ob["proj"]]) / c.student_temperature).chunk(2)
    teacher_output = torch.cat([ta["proj"], tb["proj"]])
    center = torch.tensor(np.asarray(state["center"]))[None]
    teacher_out = F.softmax((teacher_output - center) / epoch_temp, dim=-1).detach().chunk(2)
    total, n_terms = 0, 0
    for iq, q in enumerate(teacher_out):
        for iv, v in enumerate(student_out):
            if iv == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(v, dim=-1), dim=-1)
            n_terms += 1
    return total / n_terms


def ref_mocov3(oa, ob, ta, tb, state, step):  # moco-v3 builder.py, in test_mocov3.py
    return ref_mocov3_pairs(oa["pred"], ob["pred"], ta["proj"], tb["proj"],
                            CONFIG.mocov3.temperature)


REFERENCES = {"simsiam": ref_simsiam, "byol": ref_byol, "simclr": ref_simclr,
              "mocov2plus": ref_mocov2plus, "dino": ref_dino, "mocov3": ref_mocov3}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_loss_and_gradient_match_pytorch(name):
    method, state = METHOD[name], method_state(name)
    oa, ob, ta, tb = embeddings(name, seed=1)

    def mean_loss(online):
        return method.pair_loss(online[0], online[1], ta, tb, state, STEP).mean()

    per_sample = method.pair_loss(oa, ob, ta, tb, state, STEP)
    grads = jax.grad(mean_loss)((oa, ob))

    to_torch = lambda d: None if d is None else {k: t(v) for k, v in d.items()}
    toa, tob, tta, ttb = map(to_torch, (oa, ob, ta, tb))
    ref = REFERENCES[name](toa, tob, tta, ttb, state, STEP)
    ref.mean().backward()

    assert per_sample.shape == (B,)
    np.testing.assert_allclose(per_sample, ref.detach().numpy(), **TOL)
    assert float(jnp.std(per_sample)) > 1e-3  # distinct per-sample values were compared
    for mine, theirs in ((grads[0], toa), (grads[1], tob)):
        for key in mine:
            ref_grad = theirs[key].grad  # None: the loss does not depend on it
            ref_grad = np.zeros(mine[key].shape) if ref_grad is None else ref_grad.numpy()
            np.testing.assert_allclose(mine[key], ref_grad, **TOL)
    if name == "simsiam":  # the projection is also a target: no gradient flows into it directly
        np.testing.assert_allclose(grads[0]["proj"], 0.0)
    if ta is not None:  # no gradient to the targets (stop-gradient)
        g_target = jax.grad(lambda tgt: method.pair_loss(oa, ob, tgt, tb, state, STEP).sum())(ta)
        assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_target))
        for key in ta:
            assert tta[key].grad is None


def test_simclr_mean_equals_solo_learn():
    oa, ob, _, _ = embeddings("simclr", seed=2)
    mine = METHOD["simclr"].pair_loss(oa, ob, None, None, {}, 0).mean()
    ref = ref_simclr_solo(t(oa["proj"]), t(ob["proj"]), CONFIG.simclr.temperature)
    np.testing.assert_allclose(mine, ref.item(), **TOL)


# --- global negatives and global statistics over 8 devices -----------------------------------

def _sharded(fn, args, devices):
    mesh = Mesh(np.asarray(devices), ("data",))
    put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
    return jax.device_get(jax.jit(fn)(*jax.tree.map(put, args)))


def test_simclr_negatives_are_global_over_8_devices():
    assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
    rng = np.random.default_rng(3)
    za, zb = (rng.standard_normal((16, D)).astype(np.float32) for _ in range(2))
    loss = lambda a, b: METHOD["simclr"].pair_loss({"proj": a}, {"proj": b}, None, None, {}, 0)
    one, eight = (_sharded(loss, (za, zb), d) for d in (jax.devices()[:1], jax.devices()))
    np.testing.assert_allclose(eight, one, **TOL)
    ref = ref_simclr({"proj": torch.tensor(za)}, {"proj": torch.tensor(zb)}, None, None, None, 0)
    np.testing.assert_allclose(one, ref.numpy(), **TOL)
    # Per-device (local) negatives would give a clearly different loss.
    local = np.concatenate([loss(za[i:i + 2], zb[i:i + 2]) for i in range(0, 16, 2)])
    assert np.abs(local - one).max() > 0.1


def test_dino_centre_and_moco_queue_use_the_global_batch():
    rng = np.random.default_rng(4)
    ta, tb = (rng.standard_normal((16, PROTOS)).astype(np.float32) for _ in range(2))
    dino, moco = METHOD["dino"], METHOD["mocov2plus"]

    def update(a, b):
        c = dino.update_state(method_state("dino"), None, None, {"proj": a}, {"proj": b}, 0)
        q = moco.update_state(moco.init_state(), None, None, {"proj": a[:, :D]},
                              {"proj": b[:, :D]}, 0)
        return c, q

    one, eight = (_sharded(update, (ta, tb), d) for d in (jax.devices()[:1], jax.devices()))
    for x, y in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
        np.testing.assert_allclose(x, y, **TOL)


# --- method state ------------------------------------------------------------------------------

def test_moco_queue_after_k_updates_with_wraparound():
    """Python simulation of solo-learn's _dequeue_and_enqueue (keys (k1, k2) -> queue[0], [1])
    with a modular pointer: batch 8 into 24 keys per view slot, and batch 10 (24 % 10 != 0)."""
    moco = METHOD["mocov2plus"]
    assert moco.queue_size == QUEUE
    for batch, k in ((8, 5), (10, 6)):
        state = moco.init_state()
        queue = np.array(state["queue"])  # [2, K, D]
        np.testing.assert_allclose(np.linalg.norm(queue, axis=-1), 1.0, rtol=1e-6)
        ptr = 0
        update = jax.jit(moco.update_state)
        rng = np.random.default_rng(batch)
        for _ in range(k):
            ka, kb = (rng.standard_normal((batch, D)).astype(np.float32) for _ in range(2))
            state = update(state, None, None, {"proj": ka}, {"proj": kb}, 0)
            for j in range(batch):
                queue[0, (ptr + j) % QUEUE] = ka[j] / np.linalg.norm(ka[j])
                queue[1, (ptr + j) % QUEUE] = kb[j] / np.linalg.norm(kb[j])
            ptr = (ptr + batch) % QUEUE
            np.testing.assert_allclose(state["queue"], queue, rtol=1e-6, atol=1e-6)
            assert int(state["ptr"]) == ptr
        assert batch * k > QUEUE  # the pointer went round the end


def test_moco_initial_queue_is_fixed():
    a, b = METHOD["mocov2plus"].init_state(), METHOD["mocov2plus"].init_state()
    np.testing.assert_array_equal(a["queue"], b["queue"])
    assert a["queue"].shape == (2, QUEUE, D) and abs(float(a["queue"].mean())) < 0.1


def test_dino_centre_update_and_teacher_temperature():
    dino, c = METHOD["dino"], CONFIG.dino
    state = dino.init_state()
    center = np.zeros(PROTOS)
    rng = np.random.default_rng(5)
    for _ in range(4):
        ta, tb = (rng.standard_normal((B, PROTOS)).astype(np.float32) for _ in range(2))
        state = dino.update_state(state, None, None, {"proj": ta}, {"proj": tb}, 0)
        # DINOLoss.update_center: sum of the 2B teacher outputs / 2B, EMA with momentum 0.9
        batch_center = np.concatenate([ta, tb]).sum(0) / (2 * B)
        center = center * c.center_momentum + batch_center * (1 - c.center_momentum)
        np.testing.assert_allclose(state["center"], center, rtol=1e-5, atol=1e-6)

    warm = c.warmup_teacher_temperature_epochs * STEPS_PER_EPOCH  # 8 steps
    for step, expected in ((0, 0.04), (2, 0.0475), (4, 0.055), (8, 0.07), (9, 0.07), (39, 0.07)):
        assert float(dino.teacher_temperature(step)) == pytest.approx(expected, abs=1e-7)
        assert expected == pytest.approx(np.interp(step, [0, warm], [0.04, 0.07]))
    no_warmup = dino_lib.teacher_temperature_schedule(0.04, 0.07, 0)
    assert float(no_warmup(0)) == pytest.approx(0.07)


def test_dino_head_matches_pytorch():
    """DINOHead(3 layers, GELU, no BN) -> normalize -> weight_norm(Linear, bias=False)."""
    for norm_last_layer in (True, False):
        head = dino_lib.DINOHead(PROTOS, hidden_dim=32, bottleneck_dim=8,
                                 norm_last_layer=norm_last_layer)
        x = np.random.default_rng(6).standard_normal((B, 12)).astype(np.float32)
        params = head.init(jax.random.key(0), x, train=False)["params"]
        if not norm_last_layer:
            params["last_layer"]["scale"] = jnp.linspace(0.5, 2.0, PROTOS)
        mine = head.apply({"params": params}, x, train=False)
        layers = []
        for i in range(3):
            lin = torch.nn.Linear(*params[f"Dense_{i}"]["kernel"].shape)
            lin.weight.data = torch.tensor(np.asarray(params[f"Dense_{i}"]["kernel"]).T)
            lin.bias.data = torch.tensor(np.asarray(params[f"Dense_{i}"]["bias"]))
            layers += [lin, torch.nn.GELU()] if i < 2 else [lin]
        last = torch.nn.utils.parametrizations.weight_norm(
            torch.nn.Linear(8, PROTOS, bias=False))
        last.parametrizations.weight.original1.data = torch.tensor(
            np.asarray(params["last_layer"]["kernel"]).T)
        g = params["last_layer"].get("scale", jnp.ones(PROTOS))
        last.parametrizations.weight.original0.data = torch.tensor(np.asarray(g))[:, None]
        with torch.no_grad():
            ref = last(F.normalize(torch.nn.Sequential(*layers)(torch.tensor(x)), dim=-1))
        np.testing.assert_allclose(mine, ref.numpy(), **TOL)
        assert ("scale" in params["last_layer"]) != norm_last_layer


# --- Hard Augment -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(METHODS))
def test_hard_augment_selects_the_brute_force_hardest_pair(name):
    method, state, n = METHOD[name], method_state(name), 4
    online, target = embeddings(name, seed=7, views=n)
    loss_fn = lambda oa, ob, ta, tb: method.pair_loss(oa, ob, ta, tb, state, STEP)
    losses = jax.jit(lambda o, tg: hard_augment.pair_losses(loss_fn, o, tg, n))(online, target)
    a, b = hard_augment.hardest_pairs(losses, n)

    view = lambda tree, i: None if tree is None else {k: v[i] for k, v in tree.items()}
    pairs = list(itertools.combinations(range(n), 2))
    brute = np.stack([np.asarray(method.pair_loss(view(online, i), view(online, j),
                                                  view(target, i), view(target, j), state, STEP))
                      for i, j in pairs])
    np.testing.assert_allclose(losses, brute, **TOL)
    best = [pairs[p] for p in brute.argmax(0)]
    assert [(int(x), int(y)) for x, y in zip(a, b)] == best
    assert len(set(best)) > 1  # samples disagree on their hardest pair: selection is per sample


# --- EMA -----------------------------------------------------------------------------------------

def test_ema_schedules():
    half_cos = lambda k: (math.cos(math.pi * min(k, TOTAL_STEPS) / TOTAL_STEPS) + 1) / 2
    expected = {  # solo-learn's cosine momentum: final - (final - base) * (cos(pi k / K) + 1) / 2
        "byol": lambda k: 1 - (1 - CONFIG.byol.tau_base) * half_cos(k),
        "dino": lambda k: 1 - (1 - CONFIG.dino.tau_base) * half_cos(k),
        "mocov2plus": lambda k: (CONFIG.mocov2plus.final_tau - (
            CONFIG.mocov2plus.final_tau - CONFIG.mocov2plus.tau_base) * half_cos(k)),
    }
    for name, ref in expected.items():
        for k in (0, 1, 10, 20, 39, 40):
            assert float(METHOD[name].ema_schedule(k)) == pytest.approx(ref(k), abs=1e-7)
    assert float(METHOD["mocov2plus"].ema_schedule(0)) == pytest.approx(0.99)
    assert float(METHOD["mocov2plus"].ema_schedule(TOTAL_STEPS)) == pytest.approx(0.999)
    assert METHOD["simclr"].ema_schedule is None and METHOD["simclr"].target_net is None


class TinyBackbone(nn.Module):
    """Pooled pixels -> Dense: the step compiles in seconds (a ResNet step takes ~40 s on CPU)."""

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.Dense(8)(x.mean((1, 2)))


def test_ema_update_in_the_train_step():
    """BYOL's target after k real train steps equals tau_k * target + (1 - tau_k) * online,
    simulated by hand from the online parameters after each step."""
    method = METHODS["byol"](CONFIG.byol, context(TinyBackbone()))
    tx = optim.sgd(schedules.constant_schedule(0.5), schedules.constant_schedule(0.9), 0.0, False)
    state = create_state(method, tx, jax.random.key(0), 8)
    assert set(state.target_params) == {"backbone", "projector"}
    step = jax.jit(make_step_fn(method, tx, StepSpec(8, 2, 8, 8, 8), jnp.float32))
    target = jax.device_get(state.target_params)
    images = np.random.default_rng(8).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    for k in range(3):
        state, metrics = step(state, images, np.float32(5.0))
        tau = 1 - (1 - CONFIG.byol.tau_base) * (math.cos(math.pi * k / TOTAL_STEPS) + 1) / 2
        assert float(metrics["ema_tau"]) == pytest.approx(tau, abs=1e-7)
        online = jax.device_get(state.params)
        target = jax.tree.map(lambda tg, o: tau * tg + (1 - tau) * o, target,
                              {key: online[key] for key in target})
        for mine, ref in zip(jax.tree.leaves(state.target_params), jax.tree.leaves(target)):
            np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-7)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(state.target_params), jax.tree.leaves(
            {key: jax.device_get(state.params)[key] for key in target})))
    assert moved > 1e-4  # the target lags the online network


def test_dino_freezes_its_last_layer_for_the_first_epoch():
    """freeze_last_layer_epochs=0.5 of 4 steps/epoch: steps 0-1 leave the prototype layer as it
    was while the rest trains; step 2 moves it."""
    cfg = CONFIG.dino.copy_and_resolve_references()
    cfg.freeze_last_layer_epochs = 0.5
    method = METHODS["dino"](cfg, context(TinyBackbone()))
    tx = optim.sgd(schedules.constant_schedule(0.5), schedules.constant_schedule(0.9), 5e-4, False)
    state = create_state(method, tx, jax.random.key(0), 8)
    step = jax.jit(make_step_fn(method, tx, StepSpec(8, 2, 8, 8, 8), jnp.float32))
    images = np.random.default_rng(3).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    last = lambda s: np.asarray(s.params["projector"]["last_layer"]["kernel"])
    first = last(state)
    for k in range(3):
        before = jax.device_get(state.params)
        state, _ = step(state, images, np.float32(5.0))
        if k < 2:
            np.testing.assert_array_equal(last(state), first)
        else:
            assert np.abs(last(state) - first).max() > 0
        assert np.abs(np.asarray(state.params["projector"]["Dense_0"]["kernel"])
                      - before["projector"]["Dense_0"]["kernel"]).max() > 0


# --- networks and views --------------------------------------------------------------------

LOSS_KEYS = {"simsiam": ({"proj", "pred"}, None), "byol": ({"pred"}, {"proj"}),
             "simclr": ({"proj"}, None), "mocov2plus": ({"proj"}, {"proj"}),
             "dino": ({"proj"}, {"proj"}), "mocov3": ({"pred"}, {"proj"})}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_networks_on_a_tiny_resnet(name):
    """Init + a train-mode forward of net / target_net (traced with abstract values: a jitted
    ResNet init costs ~12 s of CPU compile), the output keys the loss reads, and target params
    being a sub-tree of the online params; then the loss on those outputs is [B]."""
    method = METHOD[name]
    x = jnp.zeros((2, 16, 16, 3))

    def forward(net):
        variables = net.init(jax.random.key(0), x, train=False)
        out, _ = net.apply(variables, x, train=True, mutable=["batch_stats"])
        return variables["params"], out

    params, out = jax.eval_shape(lambda: forward(method.net))
    online_keys, target_keys = LOSS_KEYS[name]
    assert online_keys <= set(out) and out["feat"].shape == (2, 64)
    target_out = None
    if method.target_net is not None:
        target_params, target_out = jax.eval_shape(lambda: forward(method.target_net))
        assert target_keys <= set(target_out)
        flat = dict(jax.tree_util.tree_flatten_with_path(params)[0])
        for path, leaf in jax.tree_util.tree_flatten_with_path(target_params)[0]:
            assert path in flat and flat[path].shape == leaf.shape
        assert (("predictor" in params) == (name in ("byol", "mocov3"))
                and "predictor" not in target_params)
    else:
        assert target_keys is None
    loss = jax.eval_shape(lambda o, tg: method.pair_loss(o, o, tg, tg, method.init_state(), 0),
                          out, target_out)
    assert loss.shape == (2,)


def test_dino_head_and_simclr_projector_run():
    """The heads run for real (numbers, not shapes) on pooled features."""
    feats = jnp.asarray(np.random.default_rng(9).standard_normal((4, 64)), jnp.float32)
    for name in ("dino", "simclr", "mocov2plus", "byol"):
        head = METHOD[name].net.projector
        variables = head.init(jax.random.key(0), feats, train=False)
        out, _ = head.apply(variables, feats, train=True, mutable=["batch_stats"])
        assert out.shape == (4, PROTOS if name == "dino" else D) and bool(jnp.isfinite(out).all())
        assert float(out.std()) > 0


def test_asymmetric_views_keep_the_rest_of_the_view():
    view = augment.ViewConfig(crop_scale=(0.3, 1.0), blur_prob=0.5)
    v1, v2 = byol.asymmetric_views(view)
    assert (v1.blur_prob, v1.solarize_prob, v2.blur_prob, v2.solarize_prob) == (1.0, 0.0, 0.1, 0.2)
    assert dataclasses.replace(v1, blur_prob=0.5) == view
    assert dataclasses.replace(v2, blur_prob=0.5, solarize_prob=0.0) == view


def test_methods_take_the_views_they_are_given():
    """make() keeps the context's pair (recipes.view_configs chose it), for every method."""
    views = (augment.ViewConfig(crop_scale=(0.3, 1.0)), augment.ViewConfig(solarize_prob=0.4))
    for name, make in METHODS.items():
        assert make(CONFIG[name], context(views=views)).view_configs == views
