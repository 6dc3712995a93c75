"""Exceptions for data loading."""


class DataError(ValueError):
    """A dataset cannot be used as configured; the message names the fix."""
