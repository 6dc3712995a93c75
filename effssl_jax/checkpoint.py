"""Orbax checkpoints of the train state plus a small JSON of run metadata, in WORKDIR/checkpoints.

The data order is a function of the step (data/loader.py), so the step in the state determines
the iterator; the metadata also carries the data iterator's own state (`meta["data_iterator"]`:
grain's iterator state, the next step and the order's fingerprint, checked on restore; identical
on every host, since each host's position is the step) and what the summary accumulates (FLOPs,
wall-clock).
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, workdir: str, keep: int = 2):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    @property
    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def restore(self, abstract_state, step: int | None = None):
        """Returns (state, meta) of `step` (default: latest). abstract_state: a pytree of
        jax.ShapeDtypeStruct with shardings (e.g. from jax.eval_shape)."""
        step = self.latest_step if step is None else step
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return restored["state"], dict(restored["meta"])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_like(state, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
