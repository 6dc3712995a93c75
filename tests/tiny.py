"""A tiny network and config shared by the tests (seconds to compile on a CPU)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from effssl_jax import config_schema, experiment
from effssl_jax.data.canvas import Images
from effssl_jax.step import StepSpec, data_mesh


def tiny_config(method="simsiam"):
    c = config_schema.default_config()
    c.method = method
    c.model.arch, c.model.width, c.model.cifar_stem = "resnet10", 8, True
    c.model.conv_impl = "xla"  # compiles faster (conftest.py)
    c.simsiam.proj_dim, c.simsiam.proj_layers, c.simsiam.pred_hidden = 32, 2, 16
    c.batch_size, c.epochs = 16, 2
    c.progressive.r_max = 16
    return c


def tiny_experiment(config, devices=None, dtype=jnp.float32, num_train=64):
    """The experiment of `config` over `devices` (default: one), 64 images: 4 steps per epoch."""
    mesh = data_mesh(jax.devices()[:1] if devices is None else devices)
    return experiment.build(config, num_train, mesh, dtype)


def tiny_images(n=16, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def compiled_step(config, devices, resolution=16, num_views=2, r_sel=8, dtype=jnp.float32,
                  extra_targets=False, skip_nonfinite=False):
    """(state, compiled step, mesh, method) for `config` over `devices`."""
    exp = tiny_experiment(config, devices, dtype)
    steps = exp.compiled_steps()
    spec = StepSpec(resolution, num_views, r_sel, 16, config.batch_size, extra_targets,
                    skip_nonfinite)
    return exp.init(jax.random.key(0)), steps.get(spec), exp.mesh, exp.method


def put_batch(images, mesh):
    """uint8 images [B, S, S, 3] as the compiled step takes them: whole images (canvas.Images)
    sharded on the mesh's data axis."""
    return jax.device_put(Images.full(images), NamedSharding(mesh, P("data")))
