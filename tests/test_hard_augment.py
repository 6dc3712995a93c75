"""Hard Augment selection: vmapped pair scoring equals an unrolled loop and a brute-force argmax;
the selected views rendered at full size are the views that were scored."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from effssl_jax import augment, hard_augment
from effssl_jax.methods import byol
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


def test_selected_views_are_the_views_rendered_at_full_size():
    """Rendering only the selected view of each sample gives exactly that view of all n rendered
    at full size, also with BYOL's asymmetric view pair (odd views: other blur, solarisation);
    the same keys at r_sel give the same crop at low resolution."""
    images = np.random.default_rng(0).integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)
    configs = byol.asymmetric_views(augment.ViewConfig())
    rng, n = jax.random.key(3), 4
    index = jnp.array([0, 1, 2, 3, 1, 2])
    # Jitted as in the step (eager, every op would compile a program of its own).
    render = jax.jit(augment.render_views, static_argnums=(3, 4, 5, 6))
    full = render(rng, images, 5.0, 16, configs, n, jnp.float32)
    picked = jax.jit(hard_augment.render_selected, static_argnums=(3, 4, 5, 6))(
        rng, images, 5.0, 16, configs, n, jnp.float32, index)
    # Two programs fuse the float ops differently: equal to float32 rounding (a wrong view is O(1)).
    np.testing.assert_allclose(picked, hard_augment.gather_views(full, index), atol=1e-5)
    assert not np.allclose(picked, full[0])  # the index mattered
    small = render(rng, images, 5.0, 8, configs, n, jnp.float32)
    shrunk = jax.image.resize(full, small.shape, "linear", antialias=True)
    assert np.abs(small - shrunk).mean() < 0.25 * np.abs(small - jnp.roll(shrunk, 1, 1)).mean()
