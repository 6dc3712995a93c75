"""Every method's projector and predictor against a PyTorch module transcribed from the method's
official code: the heads that each method's make() builds get their initialised flax parameters
copied into the transcription, the same batch goes through both in training mode (batch norm on
the batch's statistics), and the outputs and the gradients of a scalar function of them, w.r.t.
the input and every parameter, must agree to 1e-5. In float64, so that a wrong term, not
rounding, is what a difference means. A parameter only one side has must be one the other side
provably does without: SimSiam's frozen projector bias and BYOL's hidden bias, which the next
batch norm cancels (their gradient here is zero), are kept in the torch modules to show it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_mocov3 import torch_build_mlp  # moco-v3 moco/builder.py:36-52, MoCo._build_mlp

from effssl_jax import config_schema, experiment

torch = pytest.importorskip("torch")
nn = torch.nn

B, FEAT, HIDDEN, D, PRED_HIDDEN, PROTOS, BOTTLENECK = 16, 64, 32, 16, 8, 24, 8
TOL = dict(rtol=1e-5, atol=1e-5)


def method(name, **overrides):
    """`name` built as a run builds it (experiment.build_method) with small heads on a ResNet-10
    of width 8, whose pooled features have FEAT = 64 dimensions."""
    c = config_schema.default_config()
    c.method = name
    c.model.arch, c.model.width, c.model.cifar_stem = "resnet10", 8, True
    c.simsiam.update(proj_dim=D, pred_hidden=PRED_HIDDEN)  # proj_hidden 0: FEAT, 3 layers
    c.byol.update(proj_hidden=HIDDEN, proj_dim=D, pred_hidden=HIDDEN)
    c.simclr.update(proj_hidden=HIDDEN, proj_dim=D)
    c.mocov2plus.update(proj_hidden=HIDDEN, proj_dim=D)
    c.mocov3.update(proj_hidden=HIDDEN, proj_dim=D, pred_hidden=HIDDEN)
    c.dino.update(proj_hidden=HIDDEN, bottleneck_dim=BOTTLENECK, num_prototypes=PROTOS)
    c[name].update(overrides)
    return experiment.build_method(c, jnp.float64, 4, 40)


# --- the official heads, transcribed -----------------------------------------------------------

class SimSiamHeads(nn.Module):
    """facebookresearch/simsiam simsiam/builder.py:22-42 (commit a7bc177): the encoder's fc
    (`base_encoder(num_classes=dim)`, so a Linear with bias) becomes the projector's last layer,
    its bias frozen ('hack: not use bias as it is followed by BN'), then BN without affine."""

    def __init__(self, prev_dim, dim=2048, pred_dim=512):
        super().__init__()
        fc = nn.Linear(prev_dim, dim)
        self.projector = nn.Sequential(nn.Linear(prev_dim, prev_dim, bias=False),
                                       nn.BatchNorm1d(prev_dim),
                                       nn.ReLU(inplace=True),  # first layer
                                       nn.Linear(prev_dim, prev_dim, bias=False),
                                       nn.BatchNorm1d(prev_dim),
                                       nn.ReLU(inplace=True),  # second layer
                                       fc,
                                       nn.BatchNorm1d(dim, affine=False))  # output layer
        self.projector[6].bias.requires_grad = False
        self.predictor = nn.Sequential(nn.Linear(dim, pred_dim, bias=False),
                                       nn.BatchNorm1d(pred_dim),
                                       nn.ReLU(inplace=True),  # hidden layer
                                       nn.Linear(pred_dim, dim))  # output layer


class BYOLMLP(nn.Module):
    """google-deepmind/deepmind-research byol/utils/networks.py:25-45 (`MLP`, haiku):
    Linear(hidden, with_bias=True) -> BatchNorm(**bn_config) -> relu -> Linear(output,
    with_bias=False); bn_config from byol/configs/byol.py (decay_rate 0.9, eps 1e-5, scale and
    offset). haiku's Linear initialises its bias to zeros (the copied value here)."""

    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(input_size, hidden_size, bias=True),
                                 nn.BatchNorm1d(hidden_size, eps=1e-5, momentum=0.1),
                                 nn.ReLU(),
                                 nn.Linear(hidden_size, output_size, bias=False))
        nn.init.zeros_(self.net[0].bias)

    def forward(self, x):
        return self.net(x)


def solo_learn_projector(features_dim, proj_hidden_dim, proj_output_dim):
    """vturrisi/solo-learn solo/methods/simclr.py:48-52 (SimCLR, as effssl_jax/methods/simclr.py
    documents: the paper's g(h) = W2 relu(W1 h) at solo-learn's widths) and, the same module,
    solo/methods/mocov2plus.py:53-57 (MoCo v2+, the source methods/mocov2plus.py cites; MoCo v2's
    facebookresearch/moco moco/builder.py:29-31 `mlp` head with proj_hidden for dim_mlp)."""
    return nn.Sequential(nn.Linear(features_dim, proj_hidden_dim),
                         nn.ReLU(),
                         nn.Linear(proj_hidden_dim, proj_output_dim))


class DINOHead(nn.Module):
    """facebookresearch/dino vision_transformer.py:257-291 (commit 7c446df), nlayers 3, use_bn
    False (main_dino.py's default), transcribed; the init is replaced by the copied weights."""

    def __init__(self, in_dim, out_dim, norm_last_layer=True, hidden_dim=2048,
                 bottleneck_dim=256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def forward(self, x):
        x = self.mlp(x)
        x = nn.functional.normalize(x, dim=-1, p=2)
        x = self.last_layer(x)
        return x


# --- copying flax parameters in, and the pairs of gradients to compare -------------------------

def copy_mlp(params, seq):
    """heads.MLP's parameters (Dense_i/Dense_0, BatchNorm_i in order) into the Linear and affine
    BatchNorm1d layers of `seq`, in order. Returns [(flax gradient path, torch parameter, how
    the torch tensor maps to the flax one)] for every parameter either side has."""
    linears = [m for m in seq if isinstance(m, nn.Linear)]
    bns = [m for m in seq if isinstance(m, nn.BatchNorm1d) and m.affine]
    assert {k for k in params if k.startswith("Dense_")} == {f"Dense_{i}"
                                                            for i in range(len(linears))}
    assert {k for k in params if k.startswith("BatchNorm_")} == {f"BatchNorm_{i}"
                                                                for i in range(len(bns))}
    pairs, t = [], lambda x: torch.tensor(np.asarray(x))
    for i, lin in enumerate(linears):
        dense = params[f"Dense_{i}"]["Dense_0"]
        lin.weight.data = t(dense["kernel"]).T.contiguous()
        pairs.append(((f"Dense_{i}", "Dense_0", "kernel"), lin.weight, lambda g: g.T))
        if "bias" in dense:
            assert lin.bias is not None, f"Dense_{i} has a bias the official head does not"
            lin.bias.data = t(dense["bias"])
            pairs.append(((f"Dense_{i}", "Dense_0", "bias"), lin.bias, lambda g: g))
        elif lin.bias is not None:  # kept at its value: it must be one a BN cancels
            pairs.append((None, lin.bias, None))
    for i, bn in enumerate(bns):
        bn.weight.data, bn.bias.data = (t(params[f"BatchNorm_{i}"][k]) for k in ("scale", "bias"))
        pairs.append(((f"BatchNorm_{i}", "scale"), bn.weight, lambda g: g))
        pairs.append(((f"BatchNorm_{i}", "bias"), bn.bias, lambda g: g))
    return pairs


def copy_dino(params, head):
    pairs, t = [], lambda x: torch.tensor(np.asarray(x))
    for i, lin in enumerate(m for m in head.mlp if isinstance(m, nn.Linear)):
        lin.weight.data = t(params[f"Dense_{i}"]["kernel"]).T.contiguous()
        lin.bias.data = t(params[f"Dense_{i}"]["bias"])
        pairs += [((f"Dense_{i}", "kernel"), lin.weight, lambda g: g.T),
                  ((f"Dense_{i}", "bias"), lin.bias, lambda g: g)]
    head.last_layer.weight_v.data = t(params["last_layer"]["kernel"]).T.contiguous()
    pairs.append((("last_layer", "kernel"), head.last_layer.weight_v, lambda g: g.T))
    if "scale" in params["last_layer"]:
        head.last_layer.weight_g.data = t(params["last_layer"]["scale"])[:, None]
        pairs.append((("last_layer", "scale"), head.last_layer.weight_g, lambda g: g[:, 0]))
    return pairs


# --- the comparison --------------------------------------------------------------------------

def random(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def compare(flax_head, torch_head, copy, in_dim, seed, perturb=None):
    """Init `flax_head` on [B, in_dim] inputs, copy it into `torch_head`, and compare the
    training-mode outputs and the gradients of sum(out * w) w.r.t. the input and every
    parameter. `perturb(params)` may move parameters off their init (e.g. DINO's g = 1)."""
    with jax.enable_x64(True):
        x = random(seed, B, in_dim)
        variables = flax_head.init(jax.random.key(seed), x, train=False)
        variables = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)
        params, state = variables["params"], {k: v for k, v in variables.items()
                                              if k != "params"}
        if perturb is not None:
            params = perturb(params)

        def forward(params, x):
            out, _ = flax_head.apply({"params": params, **state}, x, train=True,
                                     mutable=["batch_stats"])
            return out

        out = forward(params, x)
        w = random(seed + 100, *out.shape)
        g_params, g_x = jax.grad(lambda p, x: jnp.sum(forward(p, x) * w), argnums=(0, 1))(
            params, x)
        out, g_params, g_x, params = jax.device_get((out, g_params, g_x, params))  # numpy
        assert out.dtype == g_x.dtype == np.float64

    torch_head = torch_head.double().train()
    pairs = copy(params, torch_head)
    tx = torch.tensor(x, requires_grad=True)
    t_out = torch_head(tx)
    (t_out * torch.tensor(w)).sum().backward()

    assert out.shape == tuple(t_out.shape) and float(np.std(out)) > 1e-2
    np.testing.assert_allclose(out, t_out.detach().numpy(), **TOL, err_msg="outputs")
    np.testing.assert_allclose(g_x, tx.grad.numpy(), **TOL, err_msg="d/d input")
    flat = {k: v for k, v in jax.tree_util.tree_flatten_with_path(g_params)[0]}
    flat = {tuple(p.key for p in k): v for k, v in flat.items()}
    compared = set()
    for path, t_param, to_flax in pairs:
        if path is None:  # a parameter only the official head has: BN cancels it
            assert t_param.grad is None or float(t_param.grad.abs().max()) < 1e-10
            continue
        np.testing.assert_allclose(flat[path], to_flax(t_param.grad.numpy()), **TOL,
                                   err_msg="/".join(path))
        compared.add(path)
    assert compared == set(flat), f"flax parameters without a torch counterpart: " \
                                  f"{set(flat) - compared}"
    t_trainable = {id(p) for p in torch_head.parameters() if p.requires_grad}
    assert t_trainable <= {id(p) for _, p, _ in pairs}  # no torch parameter left unchecked
    return out


# --- one test per method -----------------------------------------------------------------------

def test_simsiam_heads_match_simsiam_builder():
    net = method("simsiam").net
    heads = SimSiamHeads(FEAT, D, PRED_HIDDEN)
    compare(net.projector, heads.projector, copy_mlp, FEAT, 0)
    compare(net.predictor, heads.predictor, copy_mlp, D, 1)


def test_byol_heads_match_deepmind_mlp():
    net = method("byol").net
    compare(net.projector, BYOLMLP(FEAT, HIDDEN, D), lambda p, m: copy_mlp(p, m.net), FEAT, 2)
    compare(net.predictor, BYOLMLP(D, HIDDEN, D), lambda p, m: copy_mlp(p, m.net), D, 3)


@pytest.mark.parametrize("name", ["simclr", "mocov2plus"])
def test_simclr_and_mocov2plus_projectors_match_solo_learn(name):
    net = method(name).net
    assert net.predictor is None
    compare(net.projector, solo_learn_projector(FEAT, HIDDEN, D), copy_mlp, FEAT, 4)


def test_mocov3_heads_match_moco_v3_builder():
    """MoCo_ViT (moco-v3 moco/builder.py:112-122): a 3-layer projector and a 2-layer predictor,
    both with the last BN."""
    net = method("mocov3").net
    compare(net.projector, torch_build_mlp(3, FEAT, HIDDEN, D), copy_mlp, FEAT, 5)
    compare(net.predictor, torch_build_mlp(2, D, HIDDEN, D), copy_mlp, D, 6)


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_dino_head_matches_dino_head(norm_last_layer):
    net = method("dino", norm_last_layer=norm_last_layer).net
    assert net.predictor is None
    # g away from its init of 1 where it is a parameter, so that it is checked
    perturb = None if norm_last_layer else (lambda p: {**p, "last_layer": {
        **p["last_layer"], "scale": jnp.linspace(0.5, 2.0, PROTOS)}})
    head = DINOHead(FEAT, PROTOS, norm_last_layer, hidden_dim=HIDDEN, bottleneck_dim=BOTTLENECK)
    compare(net.projector, head, copy_dino, FEAT, 7, perturb)


def test_removing_simsiam_projector_output_bn_is_caught():
    """The check is sharp: SimSiam's projector without its output BN disagrees with builder.py."""
    net = method("simsiam").net
    broken = net.projector.clone(out_bn=False)
    with pytest.raises(AssertionError):
        compare(broken, SimSiamHeads(FEAT, D, PRED_HIDDEN).projector, copy_mlp, FEAT, 0)
