"""SSL methods behind one interface (see base.py); `get_method` builds one from a config."""
from __future__ import annotations

from effssl_jax.methods import simsiam

METHODS = {"simsiam": simsiam.make}


def get_method(config, backbone, feature_dim: int, view_config, dtype):
    try:
        make = METHODS[config.method]
    except KeyError:
        raise ValueError(f"unknown method {config.method!r}; valid: {', '.join(sorted(METHODS))}"
                         ) from None
    return make(config[config.method], backbone, feature_dim, view_config, dtype)
