"""--distributed: where its settings come from, and one-line errors (docs/multi_host.md)."""
import re
import subprocess
import sys

import pytest
from test_launch import ROOT, TINY

from effssl_jax import distributed
from effssl_jax.errors import ConfigError


def test_settings_come_from_flags_else_the_environment(monkeypatch):
    for var in distributed.ENV.values():
        monkeypatch.delenv(var, raising=False)
    assert distributed.settings() == {}  # nothing given: JAX detects the cluster
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert distributed.settings() == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                      "process_id": 3}
    assert distributed.settings(process_id=1)["process_id"] == 1  # a flag wins


@pytest.mark.parametrize("given, message", [
    ({"num_processes": 0}, "num_processes=0 must be >= 1"),
    ({"num_processes": 2, "process_id": 2}, "process_id=2 must lie in [0, num_processes)"),
])
def test_bad_settings_are_one_line(given, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        distributed.settings(**given)


def test_no_cluster_and_no_settings_is_one_line_naming_the_flags(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}  # no cluster variables
    r = subprocess.run([sys.executable, "launch.py", *TINY, f"--workdir={tmp_path / 'w'}",
                        "--distributed"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr
    assert "jax.distributed.initialize failed" in errors[0]
    assert "--coordinator_address=HOST:PORT --num_processes=N --process_id=I" in errors[0]
