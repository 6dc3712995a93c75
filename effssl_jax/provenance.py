"""Which code ran a run: WORKDIR/provenance.json, one record per launch (a resumed run may run
other code than it started with), so that a figure under results/ can name the commit that made it.

Each record: the UTC time, the step the launch started from, the git commit of the checkout the
package was imported from (None outside a git checkout, e.g. an installed wheel) and whether its
tracked files differed from that commit, and the versions of Python and the numerical packages.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess

from effssl_jax import run_log, storage

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint")
FILE = "provenance.json"


def _git(directory: str, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version(directory: str | None = None) -> dict:
    """{commit, dirty, python, <package>: version} of the checkout holding `directory` (default:
    this package's)."""
    directory = directory or os.path.dirname(os.path.abspath(__file__))
    commit = _git(directory, "rev-parse", "HEAD")
    status = _git(directory, "status", "--porcelain", "--untracked-files=no") if commit else None
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"commit": commit, "dirty": None if status is None else bool(status),
            "python": platform.python_version(), **versions}


def record(workdir: str, start_step: int) -> None:
    """Appends this launch's record to WORKDIR/provenance.json (process 0 only, by the caller)."""
    run_log.append_json(storage.join(workdir, FILE), {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "start_step": start_step, **code_version()})


def read(workdir: str) -> list[dict]:
    """The run's launches, oldest first ([] for a run from before this file existed)."""
    return run_log.read_json_list(storage.join(workdir, FILE))
