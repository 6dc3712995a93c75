"""What every entry point shares: expected errors print one line and exit 2; bugs keep their
traceback."""
from __future__ import annotations

import sys
from typing import Callable

from effssl_jax.errors import EXIT_CODE, UserError


def run_main(main: Callable, *args):
    """Calls main(*args); a UserError becomes `error: <message>` on stderr and exit code 2."""
    try:
        return main(*args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CODE)
