"""A tiny network and config shared by the tests (seconds to compile on a CPU)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from effssl_jax import config_schema, optim, plan as plan_lib
from effssl_jax.train import build_method
from effssl_jax.train_step import CompiledSteps, StepSpec, create_state, data_mesh, make_step_fn


def tiny_config(method="simsiam"):
    c = config_schema.default_config()
    c.method = method
    c.model.arch, c.model.width, c.model.cifar_stem = "resnet18", 8, True
    c.simsiam.proj_dim, c.simsiam.proj_layers, c.simsiam.pred_hidden = 32, 2, 16
    c.batch_size, c.epochs = 16, 2
    c.progressive.r_max = 16
    return c


def tiny_method(config, dtype=jnp.float32, steps_per_epoch=4):
    return build_method(config, dtype, steps_per_epoch, steps_per_epoch * config.epochs)


def tiny_images(n=16, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def step_parts(config, devices, resolution=16, dtype=jnp.float32):
    """(state initialiser, method, optimiser, mesh, abstract state) for `config` over `devices`."""
    method = tiny_method(config, dtype)
    plan = plan_lib.make_plan(config, 64)
    tx = optim.sgd(plan.lr, plan.momentum, config.optim.weight_decay, False)
    mesh = data_mesh(devices)
    repl = NamedSharding(mesh, P())
    init = jax.jit(lambda r: create_state(method, tx, r, resolution), out_shardings=repl)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl),
                            jax.eval_shape(init, jax.random.key(0)))
    return init, method, tx, mesh, abstract


def compiled_step(config, devices, resolution=16, num_views=2, r_sel=8, dtype=jnp.float32,
                  extra_targets=False):
    """(state, compiled step, mesh, method) for `config` over `devices`."""
    init, method, tx, mesh, abstract = step_parts(config, devices, resolution, dtype)
    state = init(jax.random.key(0))
    steps = CompiledSteps(lambda s: make_step_fn(method, tx, s, dtype), mesh, abstract)
    spec = StepSpec(resolution, num_views, r_sel, 16, config.batch_size, extra_targets)
    return state, steps.get(spec), mesh, method


def put_batch(images, mesh):
    return jax.device_put(images, NamedSharding(mesh, P("data")))
