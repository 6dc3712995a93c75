"""Multi-host start-up: every host runs the same command with `--distributed`.

On a cluster that JAX detects (Cloud TPU pods, SLURM, Open MPI) no setting is needed. Anywhere
else give the coordinator (process 0's address and a free port), the number of processes and each
process's id: as `launch.py` flags, or as the environment variables JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID. On CPUs the processes talk through gloo.
"""
from __future__ import annotations

import os

import jax

from effssl_jax.errors import ConfigError

ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


def settings(coordinator_address: str | None = None, num_processes: int | None = None,
             process_id: int | None = None) -> dict:
    """The explicit settings, from the arguments or else the environment ({} to auto-detect)."""
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
             "process_id": process_id}
    out = {}
    for key, value in given.items():
        value = value if value is not None else os.environ.get(ENV[key])
        if value in (None, ""):
            continue
        if key != "coordinator_address":
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"{key}={value!r} must be an integer") from None
        out[key] = value
    if "num_processes" in out and out["num_processes"] < 1:
        raise ConfigError(f"num_processes={out['num_processes']} must be >= 1")
    if "process_id" in out and not 0 <= out["process_id"] < out.get("num_processes", 1 << 30):
        raise ConfigError(f"process_id={out['process_id']} must lie in [0, num_processes)")
    return out


def initialize(**given) -> None:
    """jax.distributed.initialize with `settings(**given)`; a failure is one line naming the fix."""
    kwargs = settings(**given)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts only use it
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            f"jax.distributed.initialize failed ({first}); on Cloud TPU, SLURM or Open MPI run "
            "the same command on every host; elsewhere give --coordinator_address=HOST:PORT "
            "--num_processes=N --process_id=I (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
            "JAX_PROCESS_ID)") from None


def is_main_process() -> bool:
    """Process 0: the one that writes the workdir's logs, metrics, summary and plots."""
    return jax.process_index() == 0
