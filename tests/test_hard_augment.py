"""Hard Augment selection: vmapped pair scoring equals an unrolled loop and a brute-force argmax;
the scored views are the trained views downsampled (Algorithm 1), for every method's recipe; the
selection below the step's resolution and the extra targets against brute force."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effssl_jax import augment, hard_augment
from effssl_jax.methods.base import negative_cosine


def simsiam_pair_loss(a, b, ta, tb):
    return 0.5 * (negative_cosine(a["pred"], b["proj"]) + negative_cosine(b["pred"], a["proj"]))


def random_outputs(n=5, batch=7, dim=6, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"pred": jax.random.normal(k1, (n, batch, dim)),
            "proj": jax.random.normal(k2, (n, batch, dim))}


def test_pair_indices_are_all_unordered_pairs():
    a, b = hard_augment.pair_indices(6)
    assert len(a) == 15 and list(zip(a, b)) == list(itertools.combinations(range(6), 2))


def test_vmapped_scores_equal_unrolled_loop():
    out = random_outputs()
    losses = hard_augment.pair_losses(simsiam_pair_loss, out, None, 5)
    take = lambda i: jax.tree.map(lambda x: x[i], out)
    unrolled = jnp.stack([simsiam_pair_loss(take(i), take(j), None, None)
                          for i, j in itertools.combinations(range(5), 2)])
    np.testing.assert_allclose(losses, unrolled, rtol=1e-6, atol=1e-7)


def test_selection_equals_brute_force_python_loop():
    n, batch = 5, 7
    out = random_outputs(n, batch)
    a, b = hard_augment.hardest_pairs(hard_augment.pair_losses(simsiam_pair_loss, out, None, n), n)
    for s in range(batch):
        best, best_pair = -np.inf, None
        for i in range(n):
            for j in range(i + 1, n):
                pa = {k: v[i, s:s + 1] for k, v in out.items()}
                pb = {k: v[j, s:s + 1] for k, v in out.items()}
                loss = float(simsiam_pair_loss(pa, pb, None, None)[0])
                if loss > best:
                    best, best_pair = loss, (i, j)
        assert (int(a[s]), int(b[s])) == best_pair
    assert len(set(zip(np.asarray(a), np.asarray(b)))) > 1  # selection varies per sample


def test_gather_views():
    views = jnp.arange(3 * 4 * 2 * 2 * 1, dtype=jnp.float32).reshape(3, 4, 2, 2, 1)
    picked = hard_augment.gather_views(views, jnp.array([2, 0, 1, 2]))
    for s, v in enumerate([2, 0, 1, 2]):
        np.testing.assert_array_equal(picked[s], views[v, s])


@pytest.mark.parametrize("n, count", [(6, 9), (5, 6), (2, 1)])
def test_cross_pairs_are_one_view_of_each_recipe(n, count):
    """View v follows recipe v % 2 (augment.render_views): a cross pair has one view of each,
    that of recipe 0 first, and every such pair is a candidate once."""
    a, b = hard_augment.pair_indices(n, cross=True)
    assert len(a) == count and all(i % 2 == 0 and j % 2 == 1 for i, j in zip(a, b))
    assert {frozenset(p) for p in zip(a, b)} == {
        frozenset(p) for p in itertools.combinations(range(n), 2) if p[0] % 2 != p[1] % 2}


@pytest.mark.parametrize("method, recipe, cross", [
    ("byol", "method", True), ("dino", "method", True), ("mocov3", "method", True),
    ("simsiam", "method", False), ("simclr", "method", False), ("mocov2plus", "method", False),
    ("byol", "paper", True), ("simclr", "paper", False)])
def test_auto_pairs_are_cross_exactly_for_asymmetric_recipes(method, recipe, cross):
    from effssl_jax import config_schema, methods
    c = config_schema.default_config()
    c.method, c.augment.recipe = method, recipe
    configs = methods.view_configs(c)
    assert hard_augment.cross_pairs("auto", configs) is cross
    assert hard_augment.cross_pairs("all", configs) is False
    assert hard_augment.cross_pairs("cross", configs) is True
    with pytest.raises(ValueError, match="hard_augment.pairs='some'"):
        hard_augment.cross_pairs("some", configs)


def _scoring_pass(method, n=4, r=16, r_sel=8, batch=6, seed=3, cross=False):
    """hard_augment.select with an online 'network' that returns its input views, so that the
    Selection's online outputs are the scored views themselves; (selection, all n views at r)."""
    from effssl_jax import config_schema, methods
    c = config_schema.default_config()
    c.method = method
    configs = methods.view_configs(c)
    images = np.random.default_rng(seed).integers(0, 256, (batch, 24, 20, 3), dtype=np.uint8)
    rng = jax.random.key(seed)
    identity = lambda x: {"x": x}
    loss = lambda a, b, ta, tb: jnp.mean((a["x"] - b["x"]) ** 2, axis=(1, 2, 3))
    select = jax.jit(lambda rng, images: hard_augment.select(
        rng, images, 5.0, identity, None, loss, num_views=n, r_sel=r_sel, resolution=r,
        view_configs=configs, dtype=jnp.float32, cross=cross))
    full = jax.jit(augment.render_views, static_argnums=(3, 4, 5, 6))(
        rng, images, 5.0, r, configs, n, jnp.float32)
    return select(rng, images), full, loss


@pytest.mark.parametrize("method", ["simsiam", "simclr", "byol", "dino", "mocov2plus", "mocov3"])
def test_scored_views_are_the_trained_views_downsampled(method):
    """Algorithm 1: each scored view is the view rendered at the step's resolution (same box,
    colour, blur and flip: every method's recipe, BYOL's asymmetric pair among them) resized
    down to r_sel with torchvision's antialiased resize; the trained pair is two of those views.
    Equal to float32 rounding of two programs (a wrong view is off by O(1))."""
    selection, full, _ = _scoring_pass(method)
    theirs = torch_resize(full, 8)
    np.testing.assert_allclose(selection.online["x"], theirs, atol=1e-5)
    chosen = np.argwhere(~np.asarray(selection.unselected).T)  # (sample, view), two per sample
    for s, v in chosen:
        assert any(np.allclose(selection.pair[k, s], full[v, s], atol=1e-5) for k in (0, 1))
    assert not np.allclose(selection.online["x"][0], selection.online["x"][1])


def torch_resize(views, size):
    """torchvision's resize(antialias=True) of views [n, B, r, r, C] (float) to size."""
    import torch
    from torchvision.transforms import functional
    x = torch.from_numpy(np.array(views, np.float32))
    n, b, r, _, c = x.shape
    x = x.reshape(n * b, r, r, c).permute(0, 3, 1, 2)
    y = functional.resize(x, [size, size], antialias=True)
    return y.permute(0, 2, 3, 1).reshape(n, b, size, size, c).numpy()


def test_selection_below_the_resolution_is_the_brute_force_hardest_pair():
    """At r_sel below the step's resolution, the chosen pair of each sample is the pair whose loss
    on the downsampled views is the largest, found by a Python loop over all pairs."""
    selection, full, loss = _scoring_pass("byol", n=5, r=16, r_sel=6, batch=8)
    small = torch_resize(full, 6)
    for s in range(small.shape[1]):
        losses = {(i, j): float(loss({"x": small[i, s:s + 1]}, {"x": small[j, s:s + 1]},
                                     None, None)[0])
                  for i, j in itertools.combinations(range(5), 2)}
        best = max(losses, key=losses.get)
        assert set(np.flatnonzero(~np.asarray(selection.unselected)[:, s])) == set(best)
    assert selection.stats["ha_selected_loss"] > selection.stats["ha_mean_loss"]


def test_cross_selection_is_the_brute_force_hardest_pair_of_one_view_of_each_recipe():
    """With cross pairs, each sample trains its hardest pair among those of one view of each of
    BYOL's two recipes, found by a Python loop, the recipe-0 view as the pair's first view."""
    selection, full, loss = _scoring_pass("byol", n=6, r=16, r_sel=6, batch=8, cross=True)
    small = torch_resize(full, 6)
    for s in range(small.shape[1]):
        losses = {(i, j): float(loss({"x": small[i, s:s + 1]}, {"x": small[j, s:s + 1]},
                                     None, None)[0])
                  for i in range(0, 6, 2) for j in range(1, 6, 2)}
        i, j = max(losses, key=losses.get)
        assert set(np.flatnonzero(~np.asarray(selection.unselected)[:, s])) == {i, j}
        np.testing.assert_allclose(selection.pair[0, s], full[i, s], atol=1e-5)
        np.testing.assert_allclose(selection.pair[1, s], full[j, s], atol=1e-5)


def test_extra_target_loss_is_the_mean_over_the_unselected_views():
    """Table 9's extra targets: for each sample, the mean over the views not in its pair of
    0.5 (L(a, k) + L(b, k)), k's outputs held constant; the chosen views are masked out."""
    n, batch = 5, 4
    out = random_outputs(n, batch, seed=1)
    unselected = np.ones((n, batch), bool)
    pairs = [(0, 1), (2, 4), (1, 3), (3, 4)]
    for s, (i, j) in enumerate(pairs):
        unselected[[i, j], s] = False
    selection = hard_augment.Selection(pair=jnp.zeros((2, batch, 1, 1, 3)), stats={}, online=out,
                                       target=None, unselected=jnp.asarray(unselected))
    trained = random_outputs(2, batch, seed=2)
    a, b = ({k: v[t] for k, v in trained.items()} for t in (0, 1))
    got = hard_augment.extra_target_loss(simsiam_pair_loss, a, b, None, None, selection)
    for s, (i, j) in enumerate(pairs):
        rest = [k for k in range(n) if k not in (i, j)]
        one = lambda x, k: {key: v[k, s:s + 1] if k is not None else x[key][s:s + 1]
                            for key, v in out.items()}
        terms = [0.5 * (float(simsiam_pair_loss(one(a, None), one(None, k), None, None)[0])
                        + float(simsiam_pair_loss(one(b, None), one(None, k), None, None)[0]))
                 for k in rest]
        assert float(got[s]) == pytest.approx(np.mean(terms), rel=1e-5)


@pytest.mark.parametrize("arch, cifar_stem, patch, resolution, side", [
    ("resnet50", False, 16, 224, 64),  # the paper's 64 px: 64/224 of r
    ("resnet50", False, 16, 96, 48),  # SP's low buckets: the floor, 1.5 x stride 32
    ("resnet18", True, 16, 16, 12),  # CIFAR stem, stride 8: 12 px (results/ha_selection_cifar16)
    ("resnet18", True, 16, 8, 8),  # never above the step's resolution
    ("vit_small", False, 16, 224, 64),  # patch 16: 64 px = 4 x 4 patches
    ("vit_tiny", False, 4, 32, 12),  # 9 px rounded up to whole 4 px patches
])
def test_the_default_selection_side_is_the_fraction_floored_at_the_stride(
        arch, cifar_stem, patch, resolution, side):
    """r_sel = 0: max(64/224 r, 1.5 output strides), a side the backbone takes, at most r."""
    from effssl_jax import config_schema
    c = config_schema.default_config()
    c.model.update(arch=arch, cifar_stem=cifar_stem, patch_size=patch)
    assert c.hard_augment.r_sel == 0
    assert hard_augment.selection_side(c, resolution) == side
    c.hard_augment.r_sel = 40  # an explicit side wins, capped at r
    assert hard_augment.selection_side(c, resolution) == min(40, resolution)
