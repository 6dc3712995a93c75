"""Tests run with 8 simulated CPU devices, so data-parallel code is exercised as on a TPU host.
Single-device tests build their mesh from jax.devices()[:1]."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
