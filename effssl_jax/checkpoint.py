"""Orbax checkpoints of the train state and the run record, in WORKDIR/checkpoints.

The data order is a function of the step (data/), so the step in the state determines the
iterator; the run record (run_record.py, saved as JSON beside the state under the name "meta")
also carries the data iterator's own state (grain's iterator state, the next step and the order's
fingerprint, checked on restore; identical on every host, since each host's position is the step)
and what the summary accumulates (FLOPs, clocks).

Faults are user errors with one line (errors.CheckpointError): a write that fails (a read-only or
full disk) ends the run at that save instead of leaving orbax's background thread to fail later;
a checkpoint that cannot be read is skipped for the newest one that can (`restore_newest`), moved
aside so that the resumed run can write that step again, and named in one warning line (the
storage layer's own complaints about it are dropped).
"""
from __future__ import annotations

import logging
import sys

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from effssl_jax import orbax_internals, storage
from effssl_jax.errors import CheckpointError
from effssl_jax.run_record import RunRecord

DAMAGED = "checkpoints_damaged"  # WORKDIR/checkpoints_damaged/<step>: set aside, never deleted


def _no_checkpoint(directory: str) -> CheckpointError:
    return CheckpointError(f"no checkpoint in {directory}; train the run first (checkpoints are "
                           "written every --config.checkpoint_every_steps)")


def _cause(e: BaseException) -> str:
    """An exception on one line: its type and the first line of its message."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def _is_storage_noise(unraisable) -> bool:
    """An error that orbax's storage layer raises where nobody can catch it, after a restore has
    already failed: its reads still in flight complete on an event loop that the failure closed
    ("Event loop is closed"), or its coroutines are dropped unfinished."""
    if isinstance(unraisable.exc_value, RuntimeError) and \
            str(unraisable.exc_value) == "Event loop is closed":
        return True
    code = getattr(unraisable.object, "cr_code", None)  # a coroutine's
    return code is not None and any(lib in code.co_filename for lib in ("orbax", "tensorstore"))


class _UnretrievedReads(logging.Filter):
    """asyncio's log of the failed reads whose futures nobody awaited once the restore had failed
    ("Future exception was never retrieved")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).partition("\n")[0].endswith("exception was never retrieved")


_UNRETRIEVED = _UnretrievedReads()


class _StorageNoise:
    """While installed, the storage layer's own reports of a failed restore (_is_storage_noise on
    sys.unraisablehook, _UnretrievedReads on asyncio's logger) are dropped: a damaged checkpoint is
    reported once, in restore_newest's warning, not once for every read that was in flight."""

    def __init__(self):
        self._previous = sys.unraisablehook

    def _hook(self, unraisable) -> None:
        if not _is_storage_noise(unraisable):
            self._previous(unraisable)

    def install(self) -> None:
        sys.unraisablehook = self._hook
        logging.getLogger("asyncio").addFilter(_UNRETRIEVED)

    def remove(self) -> None:
        sys.unraisablehook = self._previous
        logging.getLogger("asyncio").removeFilter(_UNRETRIEVED)


_HANDLER_SET = False


def _use_replica_parallel_only_across_hosts() -> None:
    """Orbax splits the write of a replicated array among its replicas, which only pays when the
    replicas are on several hosts; in one process it slices every array on the device first,
    compiling one slice program per parameter shape at the first save (orbax itself turns it off
    on GPU)."""
    global _HANDLER_SET
    if _HANDLER_SET:
        return
    _HANDLER_SET = True
    # orbax's default handler, but for this; its metadata store keeps typed PRNG keys typed.
    from absl import logging as absl_logging
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # not its "overriding" warning
    try:
        ocp.type_handlers.register_type_handler(jax.Array, ocp.type_handlers.ArrayHandler(
            use_replica_parallel=jax.process_count() > 1,
            array_metadata_store=orbax_internals.array_metadata_store_of_default_handler()),
            override=True)
    finally:
        absl_logging.set_verbosity(verbosity)


class Checkpointer:
    def __init__(self, workdir: str, keep: int = 2, create: bool = True):
        """create=False (evaluate, export): the directory must exist; nothing is created."""
        _use_replica_parallel_only_across_hosts()
        self.workdir = storage.absolute(workdir)  # orbax writes gs:// itself (TensorStore)
        self.directory = storage.join(self.workdir, "checkpoints")
        self._saving: int | None = None  # the step of the last save started
        if not create and not storage.isdir(self.directory):
            raise _no_checkpoint(self.directory)
        storage.refresh(self.directory)  # orbax lists it next
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create))

    @property
    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of the kept checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, record: RunRecord) -> None:
        """Starts an asynchronous save; an earlier one that failed, or this one failing to start,
        raises CheckpointError."""
        self.wait()  # orbax waits for the previous save anyway; here its failure names its step
        try:
            self._saving = step
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(record.to_dict())),
                force=True)
        except Exception as e:  # noqa: BLE001 - any failure to write is the same fault
            raise self._write_error(step, e) from e

    def check(self) -> None:
        """Raises CheckpointError if the last asynchronous save has failed (non-blocking)."""
        try:
            self._manager.check_for_errors()
        except Exception as e:  # noqa: BLE001
            raise self._write_error(self._saving, e) from e

    def wait(self) -> None:
        """Blocks until the last save is on disk; a failed one raises CheckpointError."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._write_error(self._saving, e) from e
        self.check()

    def _write_error(self, step, e: BaseException) -> CheckpointError:
        return CheckpointError(
            f"could not write a checkpoint (step {step}) to {self.directory}: {_cause(e)}; make "
            "it writable (permissions, free space) and rerun: the run resumes from its last "
            "checkpoint")

    def restore(self, abstract_state, step: int | None = None) -> tuple[object, RunRecord]:
        """Returns (state, run record) of `step` (default: latest). abstract_state: a pytree of
        jax.ShapeDtypeStruct with shardings (e.g. from jax.eval_shape)."""
        step = self._existing(step)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return restored["state"], RunRecord.from_dict(dict(restored["meta"]))

    def read_record(self, step: int | None = None) -> RunRecord:
        """The run record of checkpoint `step` (default: latest) alone, without its state."""
        restored = self._manager.restore(self._existing(step), args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))
        return RunRecord.from_dict(dict(restored["meta"]))

    def _existing(self, step: int | None) -> int:
        """`step` (default: the latest), if it has a checkpoint; else CheckpointError."""
        steps = self._manager.all_steps()
        if not steps:
            raise _no_checkpoint(self.directory)
        step = self.latest_step if step is None else step
        if step not in steps:
            raise CheckpointError(f"no checkpoint of step {step} in {self.directory}; it has "
                                  f"steps {', '.join(map(str, sorted(steps)))}")
        return step

    def restore_newest(self, abstract_state) -> tuple[object, RunRecord]:
        """The newest checkpoint that restores cleanly. Newer ones that fail (a truncated or
        deleted file: a crash mid-write, a damaged disk) are, once an older one has restored (so
        the failure is theirs, not the config's), named in one warning line and moved to
        WORKDIR/checkpoints_damaged/. If none restores, CheckpointError lists every failure."""
        failures, noise = [], _StorageNoise()
        noise.install()  # before the attempts: the noise can come before their exceptions
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self.restore(abstract_state, step)
            except CheckpointError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever a damaged file raises
                failures.append((step, _cause(e)))
                continue
            if failures:  # the noise of their reads can come later still: it stays dropped
                self._set_aside(failures, step)
            else:
                noise.remove()
            return restored
        raise CheckpointError(
            f"no checkpoint in {self.directory} can be restored: "
            + "; ".join(f"step {s}: {why}" for s, why in failures)
            + ". If the config changed since they were written, rerun with the saved one "
              "(WORKDIR/config.json); else start a new --workdir")

    def _set_aside(self, failures: list[tuple[int, str]], restored: int) -> None:
        """Moves the checkpoints that failed out of the way (so that the resumed run can write
        their steps again) and says so in one line."""
        steps = [s for s, _ in failures]
        if jax.process_index() == 0:
            for step in steps:
                storage.move(storage.join(self.directory, str(step)),
                             storage.join(self.workdir, DAMAGED, str(step)))
            print(f"warning: checkpoint {', '.join(f'{s} ({why})' for s, why in failures)} "
                  f"cannot be restored; moved to {storage.join(self.workdir, DAMAGED)}, "
                  f"resuming from checkpoint {restored}", flush=True)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("effssl_jax: damaged checkpoints set aside")
        storage.refresh(self.directory)
        self._manager.reload()

    def close(self) -> None:
        self._manager.close()


def abstract_like(state, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
