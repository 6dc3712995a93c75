"""Train a self-supervised encoder: python launch.py --config configs/X.py [--workdir DIR] [--config.a.b=v]."""
from __future__ import annotations

import datetime
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file in configs/ (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder; rerunning with it resumes. Default: "
                               "runs/<config>-<time>.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first "
                                 "(multi-host GPU/TPU).")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    from effssl_jax import cpu_flags
    cpu_flags.set_default_xla_flags()  # before JAX starts; a user's XLA_FLAGS win
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint file at INFO
    if _DISTRIBUTED.value:
        import jax
        jax.distributed.initialize()
    from effssl_jax import config_schema, train  # after flags: fast --help

    config = _CONFIG.value
    workdir = _WORKDIR.value
    if workdir is None:
        name = os.path.basename(flags.FLAGS["config"].config_filename)
        name = name.replace(".py", "").replace(":", "-").replace("+", "_")
        workdir = os.path.join("runs", f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    print(f"workdir: {workdir}", flush=True)
    try:
        if config.mode == "lr_range_test":
            from effssl_jax import lr_range_test
            lr_range_test.run(config, workdir)
        else:
            train.run(config, workdir)
    except (config_schema.ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
