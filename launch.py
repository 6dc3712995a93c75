"""Train a self-supervised encoder.

    python launch.py --config configs/X.py[:arg] [--workdir DIR] [--config.a.b=v] [--distributed]

Several hosts: the same command on every host with --distributed (effssl_jax/distributed.py:
detected on Cloud TPU, SLURM and Open MPI; elsewhere add --coordinator_address, --num_processes
and --process_id).
"""
from __future__ import annotations

import datetime
import difflib
import os
import re
import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from effssl_jax import cli  # --workdir and --distributed, shared by every entry point

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file in configs/ (path[:arg]).",
                                          lock_config=True)
flags.mark_flags_as_required(["config"])
for _shared in (cli.WORKDIR, *cli.MULTI_HOST):
    flags.declare_key_flag(_shared.name)  # --help lists them


def default_workdir() -> str:
    name = os.path.basename(flags.FLAGS["config"].config_filename)
    name = name.replace(".py", "").replace(":", "-").replace("+", "_")
    return os.path.join("runs", f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}")


def main(argv):
    del argv
    from effssl_jax import cpu_flags
    cpu_flags.set_default_xla_flags()  # before JAX starts; a user's XLA_FLAGS win
    cli.quiet_logging()
    from effssl_jax import distributed, experiment, lr_range_test, train  # fast --help

    config, workdir = _CONFIG.value, cli.WORKDIR.value or default_workdir()
    experiment.enable_dtype(config.dtype)

    def entry():
        cli.initialize_distributed()
        if cli.DISTRIBUTED.value and cli.WORKDIR.value is None:  # each host would date its own
            raise distributed.ConfigError("--distributed needs --workdir: one directory that "
                                          "every host reads and writes (shared storage)")
        if distributed.is_main_process():
            print(f"workdir: {workdir}", flush=True)
        run = lr_range_test.run if config.mode == "lr_range_test" else train.run
        return run(config, workdir)

    cli.run_main(entry)


def _flat_keys(config, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        keys.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            keys += _flat_keys(value, f"{prefix}{key}.")
    return keys


def _unknown_override(argv) -> str | None:
    """The one-line error for the first --config.KEY override that the recipe has no KEY for."""
    config_arg = next((a.split("=", 1)[1] if "=" in a else next(iter(argv[i + 1:]), "")
                       for i, a in enumerate(argv) if re.match(r"^--?config(=|$)", a)), None)
    if not config_arg:
        return None
    keys = _flat_keys(flags.FLAGS["config"].parser.parse(config_arg))
    for arg in argv:
        if (m := re.match(r"^--?config\.([^=]+)", arg)) and m.group(1) not in keys:
            key, close = m.group(1), difflib.get_close_matches(m.group(1), keys, n=1)
            return f"unknown config key {key}; " + (f"did you mean {close[0]}?" if close else
                                                   "effssl_jax/config_schema.py lists the keys")
    return None


def parse_flags(argv):
    """absl's flag parsing; an override of a key the config does not have is one line, exit 2."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError):
        message = _unknown_override(argv)
        if message is None:
            raise
        from effssl_jax.errors import EXIT_CODE
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CODE)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
