"""ViT backbones against timm (in the test extra): parameter counts, the forward pass on the same
weights at timm's grid and at another resolution, the position-embedding resampling, and the
state_dict conversion both ways."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effssl_jax.models import vit

timm = pytest.importorskip("timm")
torch = pytest.importorskip("torch")


def _timm(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(f"{name}_patch16_224", pretrained=False, num_classes=0, **kw).eval()


@pytest.mark.parametrize("name", ["vit_tiny", "vit_small", "vit_base"])
def test_param_counts_equal_timms(name):
    shapes = jax.eval_shape(lambda: vit.get_vit(name).init(jax.random.key(0),
                                                           jnp.zeros((1, 224, 224, 3))))
    ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
    assert ours == sum(p.numel() for p in _timm(name).parameters())


@pytest.mark.parametrize("size", [224, 160])
def test_forward_equals_timms_on_the_same_weights(size):
    model = _timm("vit_tiny", dynamic_img_size=True)  # timm resamples pos_embed per input
    params = vit.from_timm(model.state_dict())
    net = vit.get_vit("vit_tiny")
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    ours = jax.jit(lambda p, x: net.apply({"params": p}, x))(params, x)
    with torch.no_grad():
        theirs = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("grid", [10, 20])
def test_pos_embed_resampling_equals_timms(grid):
    from timm.layers import resample_abs_pos_embed
    pos = np.random.default_rng(1).normal(size=(1, 1 + 14 * 14, 32)).astype(np.float32)
    theirs = resample_abs_pos_embed(torch.from_numpy(pos), [grid, grid]).numpy()
    ours = np.asarray(vit.resample_pos_embed(jnp.asarray(pos), grid))
    assert ours.shape == (1, 1 + grid * grid, 32)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_state_dict_round_trip_and_input_check():
    model = _timm("vit_tiny")
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    back = vit.to_timm(vit.from_timm(sd))
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    with pytest.raises(ValueError, match="multiples of 16"):
        vit.get_vit("vit_tiny").init(jax.random.key(0), jnp.zeros((1, 40, 40, 3)))
