"""What every entry point shares. One convention: absl flags (launch.py's `--config` and
`--config.KEY=VALUE` are ml_collections config flags, as big_vision's; the flags below are defined
here once); expected errors print one line and exit 2; bugs keep their traceback.

Importing this module defines the flags only (no JAX), so that `--help` stays fast."""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Callable

from absl import app, flags
from absl import logging as absl_logging

from effssl_jax.errors import EXIT_CODE, UserError

WORKDIR = flags.DEFINE_string("workdir", None, "The run's folder (launch.py: rerunning with it "
                              "resumes; default runs/<config>-<time>).")
STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
OUT = flags.DEFINE_string("out", None, "Where the command writes (report: a folder, default "
                          "report; export: FILE.pt or FILE.npz, default backbone.pt; prepare: the "
                          "data_dir).")
DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Start JAX's multi-host runtime first "
                                "(jax.distributed.initialize; every host runs the command).")
COORDINATOR = flags.DEFINE_string("coordinator_address", None, "With --distributed: process 0's "
                                  "HOST:PORT (default: detected, or JAX_COORDINATOR_ADDRESS).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --distributed: the number of "
                                     "processes (default: detected, or JAX_NUM_PROCESSES).")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --distributed: this process's id "
                                  "(default: detected, or JAX_PROCESS_ID).")
MULTI_HOST = (DISTRIBUTED, COORDINATOR, NUM_PROCESSES, PROCESS_ID)


def parse(argv: list[str]) -> list[str]:
    """Parses argv (argv[0]: the program) into fresh flag values, every flag not in argv at its
    default: an entry point's main(argv) called again from Python (tests) keeps nothing of the
    previous call. Returns the positional arguments after argv[0]."""
    flags.FLAGS.unparse_flags()
    return flags.FLAGS(argv)[1:]


def flags_only(positional: list[str]) -> None:
    """A UserError for positional arguments given to a command that takes flags only."""
    if positional:
        raise UserError(f"unexpected arguments {positional}; every argument is a --flag")


def workdir() -> str:
    """--workdir, which the command needs."""
    if WORKDIR.value is None:
        raise UserError("--workdir is required: the run's folder")
    return WORKDIR.value


def initialize_distributed() -> None:
    """jax.distributed.initialize when --distributed, with the flags' settings."""
    if DISTRIBUTED.value:
        from effssl_jax import distributed
        distributed.initialize(coordinator_address=COORDINATOR.value,
                               num_processes=NUM_PROCESSES.value, process_id=PROCESS_ID.value)


def run_app(command: Callable, module: str, shared=()) -> None:
    """absl's app.run of command(positional arguments) under run_main; `--help` lists the flags
    of `module` (the entry point's) and the `shared` ones it reads (flag holders of this module),
    also when started as an installed script, whose main module defines none."""
    key_flags = [*flags.FLAGS.get_key_flags_for_module(module),
                 *(flags.FLAGS[holder.name] for holder in shared)]
    for flag in key_flags:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def main(argv):
        quiet_logging()
        run_main(command, argv[1:])  # app.run would print a returned value

    app.run(main)


def quiet_logging() -> None:
    """absl logs at WARNING unless --verbosity is given (orbax logs each file it writes at INFO)."""
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)


def run_main(main: Callable, *args):
    """Calls main(*args); a UserError becomes `error: <message>` on stderr and exit code 2; a run
    stopped by SIGTERM/SIGINT after saving its checkpoint exits with EXIT_PREEMPTED (75)."""
    from effssl_jax.preemption import EXIT_PREEMPTED, Preempted  # imports JAX
    try:
        return main(*args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        _exit(EXIT_CODE)
    except Preempted as e:
        print(str(e), file=sys.stderr, flush=True)
        _exit(EXIT_PREEMPTED)


def _exit(code: int):
    """sys.exit(code), unless threads that will never end would keep the process alive: after a
    failed checkpoint write, orbax's background threads wait (for up to its long timeout) for
    signals that never come, and Python's shutdown would join them. Then os._exit(code)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.current_thread()):
        logging.shutdown()
        os._exit(code)
    sys.exit(code)
