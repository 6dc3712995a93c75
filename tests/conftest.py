"""Tests run with 8 simulated CPU devices, so data-parallel code is exercised as on a TPU host.
Single-device tests build their mesh from jax.devices()[:1].

The suite is dominated by XLA compiling tiny networks, most of it in LLVM: tests compile without
LLVM optimisation (`COMPILE_FAST`, also passed to the launch.py subprocesses), which changes
neither the programs nor their float semantics, and each worker keeps XLA's persistent cache in
its pytest temp folder from the first test on (where train.run would put it), so programs
compiled again by later tests are loaded."""
import os

import pytest

COMPILE_FAST = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {COMPILE_FAST}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session", autouse=True)
def persistent_compilation_cache(tmp_path_factory):
    from effssl_jax import compile as compile_lib
    compile_lib.enable_persistent_cache(str(tmp_path_factory.getbasetemp() / "run"))
