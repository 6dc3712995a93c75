"""SSL methods behind one interface (see base.py); `get_method` builds one from a config and
`view_configs` gives its two views' augmentation (recipes.py)."""
from __future__ import annotations

from effssl_jax.errors import ConfigError
from effssl_jax.methods import byol, dino, mocov2plus, mocov3, recipes, simclr, simsiam
from effssl_jax.methods.base import MethodContext

METHODS = {"simsiam": simsiam.make, "byol": byol.make, "simclr": simclr.make,
           "mocov2plus": mocov2plus.make, "dino": dino.make, "mocov3": mocov3.make}


def get_method(config, context: MethodContext):
    try:
        make = METHODS[config.method]
    except KeyError:
        raise ConfigError(f"unknown method {config.method!r}; valid: {', '.join(sorted(METHODS))}"
                         ) from None
    return make(config[config.method], context)


def view_configs(config):
    """The two views' augmentation of config.method under config.augment (recipes.py)."""
    return recipes.view_configs(config.method, config.augment)
