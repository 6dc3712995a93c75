"""The loop's shape (train.py): Algorithm 1 in one short function whose cadences are named calls,
fed by loaders that all yield the step's global array."""
import ast
import inspect
import textwrap

import jax
import pytest
from tiny import tiny_config

from effssl_jax import experiment, methods, train
from effssl_jax import plan as plan_lib
from effssl_jax.data import pipeline
from effssl_jax.step import data_mesh


def test_the_loop_is_one_short_function_without_a_break():
    source = textwrap.dedent(inspect.getsource(train._train))
    loop = ast.parse(source).body[0]
    assert loop.end_lineno - loop.lineno + 1 <= 60
    assert not [n for n in ast.walk(loop) if isinstance(n, ast.Break)]
    calls = {n.func.id for n in ast.walk(loop)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {"_step", "_check_metrics", "_evaluate", "_save"} <= calls


@pytest.mark.parametrize("loader", ["memory", "grain"])
def test_every_loader_yields_the_steps_global_array(loader, image_folder):
    """The memory and grain loaders give this host's rows as numpy; make_loader's loader gives the
    train step its global array, as the device loader does."""
    config = tiny_config()
    config.update(dataset=f"folder:{image_folder(per_class=8)}", batch_size=16)
    config.data.loader = loader
    mesh = data_mesh(jax.devices()[:2])
    size = experiment.host_size(config, methods.view_configs(config), 16)
    train_data, _, _ = pipeline.open_run_data(config, size, 16)
    plan = plan_lib.make_plan(config, len(train_data))
    ld = pipeline.make_loader(config, train_data, plan, mesh, lambda r: size)
    ld.restore(0)
    step, images = next(iter(ld))
    ld.close()
    assert step == 0
    for leaf in jax.tree.leaves(images):
        assert isinstance(leaf, jax.Array) and leaf.shape[0] == 16
        assert leaf.sharding.is_equivalent_to(jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec("data")), leaf.ndim)
