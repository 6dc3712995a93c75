"""Tiny finished runs (workdirs) of the configs in configs/, for the evaluation, report and
export tests."""
import os

from effssl_jax import config_schema, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_run_config(recipe: str, epochs: int = 2):
    c = config_schema.from_recipe(os.path.join(ROOT, "configs", f"{recipe}.py"))
    c.dataset, c.synthetic_train_size, c.synthetic_test_size = "synthetic", 64, 32
    c.batch_size, c.epochs = 16, epochs
    c.model.arch, c.model.width, c.model.cifar_stem = "resnet10", 8, True
    c.model.conv_impl = "xla"  # compiles faster (conftest.py)
    c.progressive.r_max, c.progressive.r_min, c.progressive.bucket_step = 16, 8, 8
    c.optim.warmup_epochs = min(c.optim.warmup_epochs, 1)
    c.hard_augment.num_views, c.hard_augment.r_sel = 3, 8
    c.simsiam.update(proj_dim=16, pred_hidden=8)
    c.eval.update(every_epochs=1, at_init=True, knn_k=5)
    c.log_every_steps, c.checkpoint_every_steps, c.progress_bar = 1, 4, False
    return c


def tiny_run(workdir, recipe: str = "simsiam_baseline", epochs: int = 2) -> str:
    train.run(tiny_run_config(recipe, epochs), str(workdir))
    return str(workdir)
