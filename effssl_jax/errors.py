"""The errors a user can fix: entry points print their message on one line and exit with 2.

Anything else is a bug and keeps its traceback (`cli.run_main`).
"""
from __future__ import annotations

EXIT_CODE = 2


class UserError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; the message names the key and the fix."""


class DataError(UserError, ValueError):
    """A dataset cannot be used as configured; the message names the fix."""


class CheckpointError(UserError):
    """A workdir has no usable checkpoint (or not the one asked for)."""


class DivergenceError(UserError, FloatingPointError):
    """Training produced a non-finite loss, gradient or state; nothing after it was saved."""
