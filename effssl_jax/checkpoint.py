"""Orbax checkpoints of the train state and the run record, in WORKDIR/checkpoints.

The data order is a function of the step (data/), so the step in the state determines the
iterator; the run record (run_record.py, saved as JSON beside the state under the name "meta")
also carries the data iterator's own state (grain's iterator state, the next step and the order's
fingerprint, checked on restore; identical on every host, since each host's position is the step)
and what the summary accumulates (FLOPs, clocks).
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from effssl_jax.errors import CheckpointError
from effssl_jax.run_record import RunRecord


class Checkpointer:
    def __init__(self, workdir: str, keep: int = 2):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    @property
    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, record: RunRecord) -> None:
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(record.to_dict())),
            force=True)

    def restore(self, abstract_state, step: int | None = None) -> tuple[object, RunRecord]:
        """Returns (state, run record) of `step` (default: latest). abstract_state: a pytree of
        jax.ShapeDtypeStruct with shardings (e.g. from jax.eval_shape)."""
        steps = self._manager.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}; train the run first "
                                  "(checkpoints are written every --config.checkpoint_every_steps)")
        step = self.latest_step if step is None else step
        if step not in steps:
            raise CheckpointError(f"no checkpoint of step {step} in {self.directory}; it has "
                                  f"steps {', '.join(map(str, sorted(steps)))}")
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return restored["state"], RunRecord.from_dict(dict(restored["meta"]))

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_like(state, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
