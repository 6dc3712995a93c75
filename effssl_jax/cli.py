"""What every entry point shares: expected errors print one line and exit 2; bugs keep their
traceback."""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Callable

from effssl_jax.errors import EXIT_CODE, UserError
from effssl_jax.preemption import EXIT_PREEMPTED, Preempted


def run_main(main: Callable, *args):
    """Calls main(*args); a UserError becomes `error: <message>` on stderr and exit code 2; a run
    stopped by SIGTERM/SIGINT after saving its checkpoint exits with EXIT_PREEMPTED (75)."""
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
